#!/usr/bin/env bash
# Refreshes isbot-patterns.json and NOTICE from the npm package isbot (Unlicense).
#
#   bash shared/bots/patterns/update.sh        # the newest 5.x
#   bash shared/bots/patterns/update.sh 5.2.3  # one version
#
# Needs npm and node. The tarball has no patterns.json of its own: the list is the `list`
# export of its index.js (the same array as src/patterns.json in isbot's repository).
# Then run the crate's tests: a new pattern that `regex` cannot compile, or one whose
# JavaScript meaning the translation does not cover, fails them by name.
set -euo pipefail

wanted="${1:-5}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
tarball="$(npm pack --silent "isbot@${wanted}")"
tar -xzf "$tarball"
node - "$here" <<'JS'
const fs = require("fs");
const here = process.argv[2];
const { list } = require("./package/index.js");
const { version, license } = require("./package/package.json");
if (license !== "Unlicense") throw new Error(`isbot ${version} is now ${license}: check before vendoring`);
fs.writeFileSync(`${here}/isbot-patterns.json`, JSON.stringify(list, null, 2) + "\n");
fs.writeFileSync(`${here}/NOTICE`, [
  "isbot-patterns.json is the pattern list of the npm package isbot",
  `version ${version} (https://github.com/omrilotan/isbot, the \`list\` export of index.js),`,
  "by Omri Lotan and contributors, released into the public domain under the Unlicense",
  "(https://unlicense.org/). Written by update.sh beside this file; do not edit it by hand.",
  "",
].join("\n"));
console.log(`isbot ${version}: ${list.length} patterns`);
JS
