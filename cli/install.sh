#!/bin/sh
# Installs the conveyor CLI from a GitHub release: picks the archive for this OS and CPU, checks
# its SHA-256 against the release's, and puts `conveyor` into CONVEYOR_INSTALL_DIR (default
# ~/.local/bin), its man page beside it under ../share/man/man1.
#
#   curl -fsSL https://github.com/OWNER/conveyor/releases/latest/download/install.sh | sh
#
# CONVEYOR_DOWNLOAD_URL: where the archives are (default: this release's download URL; a
# file:// URL installs from a local `make cli-archive`).
set -eu

repository="${CONVEYOR_REPOSITORY:-example/conveyor}"
base="${CONVEYOR_DOWNLOAD_URL:-https://github.com/$repository/releases/latest/download}"
dir="${CONVEYOR_INSTALL_DIR:-$HOME/.local/bin}"

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) target=x86_64-unknown-linux-gnu ;;
  Linux-aarch64 | Linux-arm64) target=aarch64-unknown-linux-gnu ;;
  Darwin-x86_64) target=x86_64-apple-darwin ;;
  Darwin-arm64) target=aarch64-apple-darwin ;;
  *) echo "conveyor: no release build for $(uname -s) $(uname -m): cargo install --locked --path cli" >&2; exit 1 ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
archive="conveyor-$target.tar.gz"
curl -fsSL "$base/$archive" -o "$work/$archive"
curl -fsSL "$base/$archive.sha256" -o "$work/$archive.sha256"
expected="$(cut -d' ' -f1 < "$work/$archive.sha256")"
if command -v sha256sum > /dev/null; then
  actual="$(sha256sum "$work/$archive" | cut -d' ' -f1)"
else
  actual="$(shasum -a 256 "$work/$archive" | cut -d' ' -f1)"
fi
if [ "$expected" != "$actual" ]; then
  echo "conveyor: $archive does not match its SHA-256 ($actual, expected $expected): not installed" >&2
  exit 1
fi
tar -xzf "$work/$archive" -C "$work"
mkdir -p "$dir" "$dir/../share/man/man1"
install -m 0755 "$work/conveyor-$target/conveyor" "$dir/conveyor"
install -m 0644 "$work/conveyor-$target/conveyor.1" "$dir/../share/man/man1/conveyor.1"
echo "conveyor installed: $dir/conveyor ($("$dir/conveyor" --version))"
case ":$PATH:" in *":$dir:"*) ;; *) echo "add $dir to your PATH" ;; esac
