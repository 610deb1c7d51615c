//! One machine word per thread that a shared library reads without calling `__tls_get_addr`.
//!
//! In a shared object (the C library, a provider that embeds asyncjob) every `thread_local!` access
//! is a call to `__tls_get_addr`: about 13 instructions, paid once or twice on every start, pause and
//! resume. Stable Rust cannot choose a thread-local's TLS model, so on Linux with glibc, x86_64 and
//! aarch64, [`thread_word!`](crate::thread_word) defines the word in assembly in the initial-exec
//! model: its offset from the thread pointer is fixed when the library is loaded, and a read is two
//! loads. glibc gives a library loaded later with `dlopen` such words from its reserve of static TLS
//! (a few hundred bytes; each word takes 8). Everywhere else the word is a `thread_local!` with a
//! constant initialiser and no destructor, which costs what the thread-local it caches would.
//!
//! The words are caches: each one holds the address of a thread-local (or 0 before the first
//! lookup), so that the thread-local itself is looked up once per thread.

/// Defines `$name` with `get() -> usize` and `set(usize)`: a machine word per thread, 0 on every new
/// thread. `$symbol` names its storage in the object file and must be unique in the final binary.
#[doc(hidden)]
#[macro_export]
macro_rules! thread_word {
    ($(#[$attr:meta])* $vis:vis struct $name:ident = $symbol:literal;) => {
        $(#[$attr])*
        #[derive(Debug)]
        $vis struct $name;
        $crate::__thread_word_storage!($vis $name, $symbol);
    };
}

#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __thread_word_storage {
    ($vis:vis $name:ident, $symbol:literal) => {
        ::core::arch::global_asm!(
            concat!(
                ".pushsection .tbss,\"awT\",@nobits\n",
                ".p2align 3\n",
                ".globl ", $symbol, "\n",
                ".hidden ", $symbol, "\n",
                ".type ", $symbol, ",@object\n",
                ".size ", $symbol, ",8\n",
                $symbol, ":\n",
                ".zero 8\n",
                ".popsection\n",
            ),
            options(att_syntax)
        );

        impl $name {
            /// This thread's word.
            #[inline(always)]
            $vis fn get() -> usize {
                let value: usize;
                // SAFETY: reads the calling thread's own 8-byte word in its static TLS block, at the
                // offset the dynamic linker put in the GOT; nothing else is touched.
                unsafe {
                    ::core::arch::asm!(
                        concat!("movq ", $symbol, "@GOTTPOFF(%rip), {v}\n", "movq %fs:({v}), {v}"),
                        v = out(reg) value,
                        options(att_syntax, nostack, preserves_flags, readonly, pure)
                    );
                }
                value
            }

            /// Set this thread's word.
            #[inline(always)]
            $vis fn set(value: usize) {
                // SAFETY: writes the calling thread's own word (see `get`), which only these two
                // functions reach.
                unsafe {
                    ::core::arch::asm!(
                        concat!("movq ", $symbol, "@GOTTPOFF(%rip), {t}\n", "movq {v}, %fs:({t})"),
                        t = out(reg) _,
                        v = in(reg) value,
                        options(att_syntax, nostack, preserves_flags)
                    );
                }
            }
        }
    };
}

#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "aarch64"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __thread_word_storage {
    ($vis:vis $name:ident, $symbol:literal) => {
        ::core::arch::global_asm!(concat!(
            ".pushsection .tbss,\"awT\",%nobits\n",
            ".p2align 3\n",
            ".globl ", $symbol, "\n",
            ".hidden ", $symbol, "\n",
            ".type ", $symbol, ",%object\n",
            ".size ", $symbol, ",8\n",
            $symbol, ":\n",
            ".zero 8\n",
            ".popsection\n",
        ));

        impl $name {
            /// This thread's word.
            #[inline(always)]
            $vis fn get() -> usize {
                let value: usize;
                // SAFETY: reads the calling thread's own 8-byte word in its static TLS block, at the
                // offset the dynamic linker put in the GOT; nothing else is touched.
                unsafe {
                    ::core::arch::asm!(
                        concat!(
                            "adrp {t}, :gottprel:", $symbol, "\n",
                            "ldr {t}, [{t}, #:gottprel_lo12:", $symbol, "]\n",
                            "mrs {v}, tpidr_el0\n",
                            "ldr {v}, [{v}, {t}]",
                        ),
                        t = out(reg) _,
                        v = out(reg) value,
                        options(nostack, preserves_flags, readonly, pure)
                    );
                }
                value
            }

            /// Set this thread's word.
            #[inline(always)]
            $vis fn set(value: usize) {
                // SAFETY: writes the calling thread's own word (see `get`), which only these two
                // functions reach.
                unsafe {
                    ::core::arch::asm!(
                        concat!(
                            "adrp {t}, :gottprel:", $symbol, "\n",
                            "ldr {t}, [{t}, #:gottprel_lo12:", $symbol, "]\n",
                            "mrs {p}, tpidr_el0\n",
                            "str {v}, [{p}, {t}]",
                        ),
                        t = out(reg) _,
                        p = out(reg) _,
                        v = in(reg) value,
                        options(nostack, preserves_flags)
                    );
                }
            }
        }
    };
}

#[cfg(not(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
#[doc(hidden)]
#[macro_export]
macro_rules! __thread_word_storage {
    ($vis:vis $name:ident, $symbol:literal) => {
        impl $name {
            fn key() -> &'static ::std::thread::LocalKey<::core::cell::Cell<usize>> {
                ::std::thread_local! {
                    static WORD: ::core::cell::Cell<usize> = const { ::core::cell::Cell::new(0) };
                }
                &WORD
            }

            /// This thread's word.
            #[inline(always)]
            $vis fn get() -> usize {
                Self::key().with(::core::cell::Cell::get)
            }

            /// Set this thread's word.
            #[inline(always)]
            $vis fn set(value: usize) {
                Self::key().with(|word| word.set(value));
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::thread_word! {
        struct TestWord = "asyncjob_test_thread_word";
    }

    #[test]
    fn each_thread_has_its_own_word_starting_at_zero() {
        assert_eq!(TestWord::get(), 0);
        TestWord::set(0x1234_5678);
        assert_eq!(TestWord::get(), 0x1234_5678);
        let other = std::thread::spawn(|| {
            let first = TestWord::get();
            TestWord::set(7);
            (first, TestWord::get())
        })
        .join()
        .expect("the thread ends normally");
        assert_eq!(other, (0, 7));
        assert_eq!(TestWord::get(), 0x1234_5678);
        TestWord::set(0);
    }
}
