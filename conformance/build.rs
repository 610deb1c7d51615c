//! Turns the linked OpenSSL's version (from openssl-sys's `DEP_OPENSSL_VERSION_NUMBER`) into cfgs,
//! because openssl-sys's own `ossl*` cfgs apply only inside openssl-sys.

/// (cfg name, minimum version number) for every cfg this crate may test.
const VERSION_CFGS: &[(&str, u64)] = &[
    ("ossl300", 0x3000_0000),
    ("ossl320", 0x3020_0000),
    ("ossl350", 0x3050_0000),
    ("ossl360", 0x3060_0000),
];

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_OPENSSL_VERSION_NUMBER");
    for (name, _) in VERSION_CFGS {
        println!("cargo::rustc-check-cfg=cfg({name})");
    }
    let raw = std::env::var("DEP_OPENSSL_VERSION_NUMBER").unwrap_or_default();
    let version = u64::from_str_radix(raw.trim(), 16).unwrap_or(0);
    for (name, min) in VERSION_CFGS {
        if version >= *min {
            println!("cargo::rustc-cfg={name}");
        }
    }
    // The report prints which OpenSSL the harness was built against, independently of what
    // OpenSSL_version() says at run time (the two differ only if the .so was swapped underneath).
    println!("cargo::rustc-env=CONFORMANCE_OPENSSL_VERSION_NUMBER={version:x}");
    let vendored = std::env::var("DEP_OPENSSL_VENDORED").is_ok_and(|v| v == "1");
    println!(
        "cargo::rustc-env=CONFORMANCE_OPENSSL_VENDORED={}",
        u8::from(vendored)
    );
}
