//! Raw bindings to the asyncjob fiber shim (`csrc/asyncjob_fiber.h`).
