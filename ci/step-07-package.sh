#!/usr/bin/env bash
# The published crates are ready to publish:
#   1. `cargo package` of asyncjob-sys, asyncjob, asyncjob-capi and asyncjob-tokio together: each
#      is built from its own .crate, outside the workspace. They depend on each other and none is
#      on crates.io yet; packaging them in one call (cargo >= 1.90) resolves each one's dependency
#      on the others from a local registry of the freshly packaged .crate files.
#   2. Each .crate carries README.md and LICENSE (the real file, not a symlink), and its manifest has
#      the license, readme, documentation, keywords, categories, rust-version and docs.rs targets.
#   3. `cargo publish --dry-run` of the four prints no warning besides the dry run's own.
#   4. The packaged asyncjob-sys declares `links = "asyncjob_fiber"`: cargo refuses a program that
#      depends on two versions of it.
# --allow-dirty: this checks what would be packaged, whatever git's state (a release starts from a
# clean tree anyway). Time on the shared 2-core host: 84 s cold (three small builds), 14 s warm;
# 22 s warm since asyncjob-tokio joined (tokio is built once more).
set -euo pipefail
cd "$(dirname "$0")/.."
CRATES=(asyncjob-sys asyncjob asyncjob-capi asyncjob-tokio)
PKG=()
for c in "${CRATES[@]}"; do PKG+=(-p "$c"); done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}/package-check
version=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print([p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "asyncjob"][0])')

echo "--- cargo package ${PKG[*]} ($(cargo -V))"
rm -rf "$CARGO_TARGET_DIR/package"
# cargo unpacks the local registry of freshly packaged crates under $CARGO_HOME/registry/src/-<hash
# of the target path>/ and reuses an unpacked directory that is already there, even when the .crate
# changed: a machine that ran this step before (same clone path) would verify against stale sources.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
# Likewise a registry crate is never rebuilt once compiled (registry sources are taken to be
# immutable), so the verify builds' artifacts of our own crates go too.
for c in "${CRATES[@]}"; do
  rm -rf "$cargo_home"/registry/src/-*/"$c-$version" "$cargo_home"/registry/cache/-*/"$c-$version.crate" \
    "$CARGO_TARGET_DIR"/debug/.fingerprint/"$c"-* "$CARGO_TARGET_DIR"/debug/build/"$c"-*
done
cargo package --allow-dirty "${PKG[@]}"

echo "--- contents of each .crate"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for c in "${CRATES[@]}"; do
  crate=$CARGO_TARGET_DIR/package/$c-$version.crate
  tar -xzf "$crate" -C "$work"
  dir=$work/$c-$version
  if [ ! -f "$dir/README.md" ] || [ -L "$dir/README.md" ]; then echo "$c: no README.md" >&2; exit 1; fi
  cmp -s "$dir/LICENSE" LICENSE || { echo "$c: LICENSE missing or not the project's" >&2; exit 1; }
  if ! grep -A3 '^## MSRV' "$dir/README.md" | grep -q 'Rust 1\.85'; then
    echo "$c: README does not state the MSRV" >&2
    exit 1
  fi
  python3 - "$dir/Cargo.toml" "$c" <<'EOF'
import sys, tomllib
path, name = sys.argv[1], sys.argv[2]
with open(path, "rb") as f:
    m = tomllib.load(f)
p = m["package"]
missing = [k for k in ("description", "license", "readme", "documentation", "repository",
                       "keywords", "categories", "rust-version") if not p.get(k)]
assert not missing, f"{name}: missing {missing}"
assert p["license"] == "Apache-2.0", p["license"]
assert p["readme"] == "README.md", p["readme"]
assert p["rust-version"] == "1.85", p["rust-version"]
assert 1 <= len(p["keywords"]) <= 5, p["keywords"]
targets = p["metadata"]["docs"]["rs"]["targets"]
for t in ("x86_64-unknown-linux-gnu", "aarch64-apple-darwin", "x86_64-apple-darwin",
          "x86_64-pc-windows-msvc"):
    assert t in targets, f"{name}: docs.rs target {t} missing"
if name == "asyncjob-sys":
    assert p.get("links") == "asyncjob_fiber", p.get("links")
print(f"{name}: {path.split('/')[-2]}.crate has README.md, LICENSE, metadata, docs.rs targets {len(targets)}")
EOF
done

echo "--- cargo publish --dry-run ${PKG[*]}"
# Verified by `cargo package` above already.
out=$(cargo publish --dry-run --no-verify --allow-dirty "${PKG[@]}" 2>&1)
echo "$out"
if grep '^warning' <<<"$out" | grep -qv 'aborting upload due to dry run'; then
  echo "cargo publish --dry-run warns" >&2
  exit 1
fi

echo "--- links = \"asyncjob_fiber\": two versions of asyncjob-sys in one program are refused"
cp -r "$work/asyncjob-sys-$version" "$work/asyncjob-sys-other"
sed -i 's/^version = ".*"/version = "99.0.0"/' "$work/asyncjob-sys-other/Cargo.toml"
mkdir -p "$work/app/src"
echo 'fn main() {}' >"$work/app/src/main.rs"
cat >"$work/app/Cargo.toml" <<EOF
[package]
name = "two-shims"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
sys_a = { package = "asyncjob-sys", path = "../asyncjob-sys-$version" }
sys_b = { package = "asyncjob-sys", path = "../asyncjob-sys-other" }
[workspace]
EOF
# Offline first: `cargo package` above has fetched the index entries this needs.
links=$(cd "$work/app" && { cargo generate-lockfile --offline 2>&1 || true; })
if ! grep -q 'links to the native library .asyncjob_fiber.' <<<"$links"; then
  links=$(cd "$work/app" && { cargo generate-lockfile 2>&1 || true; })
fi
if ! grep -q 'links to the native library .asyncjob_fiber.' <<<"$links"; then
  echo "$links" >&2
  echo "expected cargo to refuse two packages that link asyncjob_fiber" >&2
  exit 1
fi
grep 'links to the native library' <<<"$links"
echo "ok: packages ready to publish"
