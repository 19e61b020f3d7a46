#!/usr/bin/env bash
# Refreshes the playground's vendored assets (assets/vendor) from the npm
# registry: the UMD builds of GraphiQL and React, GraphiQL's CSS and each
# package's licence. The versions are pinned here; to update, change them,
# run this script, load the playground (the browser test does:
# go test ./internal/server -run TestPlayground) and commit the result.
#
# GraphiQL 3.x is the last line with a UMD build; 4.x and later are ES
# modules only and would need a bundler. GraphiQL 3 runs on React 18.
#
# go generate does not run this: CI has no network, and the assets are
# committed.
set -euo pipefail

GRAPHIQL_VERSION=3.8.3
REACT_VERSION=18.3.1

cd "$(dirname "$0")"
out=assets/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for pkg in "graphiql@$GRAPHIQL_VERSION" "react@$REACT_VERSION" "react-dom@$REACT_VERSION"; do
  name=${pkg%@*}
  (cd "$work" && npm pack --silent "$pkg" >/dev/null)
  mkdir -p "$work/$name"
  tar xzf "$work/$name-${pkg#*@}.tgz" -C "$work/$name"
done

rm -rf "$out"
mkdir -p "$out"
# The source map comments are dropped: the maps are not shipped, and a
# browser's developer tools would ask the server for them.
strip_map() { grep -v '^[/][/*]# sourceMappingURL=' "$1" >"$2"; }
strip_map "$work/graphiql/package/graphiql.min.js" "$out/graphiql.min.js"
strip_map "$work/graphiql/package/graphiql.min.css" "$out/graphiql.min.css"
strip_map "$work/react/package/umd/react.production.min.js" "$out/react.production.min.js"
strip_map "$work/react-dom/package/umd/react-dom.production.min.js" "$out/react-dom.production.min.js"
cp "$work/graphiql/package/LICENSE" "$out/LICENSE.graphiql"
cp "$work/react/package/LICENSE" "$out/LICENSE.react"
cp "$work/react-dom/package/LICENSE" "$out/LICENSE.react-dom"

{
  echo "graphiql $GRAPHIQL_VERSION"
  echo "react $REACT_VERSION"
  echo "react-dom $REACT_VERSION"
  echo
  (cd "$out" && sha256sum graphiql.min.js graphiql.min.css react.production.min.js react-dom.production.min.js)
} >"$out/VERSIONS"
echo "updated $out:"
cat "$out/VERSIONS"
