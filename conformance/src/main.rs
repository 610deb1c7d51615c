//! The conformance report (work in progress).
fn main() {
    println!("asyncjob conformance: not implemented yet");
}
