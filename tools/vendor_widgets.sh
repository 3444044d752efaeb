#!/usr/bin/env bash
# Vendor the ipywidgets HTML manager and RequireJS into _vendor/jupyter-widgets/,
# so that the widget state embedded in the built book renders offline (myst-nb
# otherwise loads both from CDNs). The versions are the ones myst-nb 1.x uses by
# default. _config.yml points myst-nb at these files (nb_ipywidgets_js).
#
# Needs npm (it only downloads the two package tarballs from the npm registry).
# Run from anywhere: tools/vendor_widgets.sh
set -euo pipefail
HTML_MANAGER=@jupyter-widgets/html-manager@1.0.6   # BSD-3-Clause
REQUIREJS=requirejs@2.3.4                          # MIT
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/_vendor/jupyter-widgets"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cd "$tmp"
npm pack --silent "$HTML_MANAGER" "$REQUIREJS" >/dev/null
mkdir hm rq
tar xzf jupyter-widgets-html-manager-*.tgz -C hm --strip-components=1
tar xzf requirejs-*.tgz -C rq --strip-components=1

rm -rf "$dest"
mkdir -p "$dest"
# The AMD bundle (base + controls + output widgets) and the Font Awesome files
# its CSS refers to (woff2 and woff: what browsers load). No source maps.
cp hm/dist/embed-amd.js "$dest/"
cp hm/dist/*.woff2 hm/dist/*.woff "$dest/"
cp hm/LICENSE "$dest/LICENSE.html-manager"
cp hm/dist/embed.js.LICENSE.txt "$dest/LICENSE.third-party.txt"
# Drop the sourceMappingURL comments: the maps are not shipped.
sed -i -E 's~//# sourceMappingURL=[^ ]*\.map~~g' "$dest/embed-amd.js"
# MathJax 3 compatibility: @jupyter-widgets/base typesets widget labels with the
# MathJax 2 API (MathJax.Hub.Queue), a TypeError on every labelled widget when the
# page loads MathJax 3 (as Sphinx does). Use MathJax 3's typesetPromise instead
# when there is no MathJax.Hub. The pattern must occur exactly once.
python3 - "$dest/embed-amd.js" <<'PY'
import sys
path = sys.argv[1]
src = open(path, encoding="utf-8").read()
old = 'void 0!==window.MathJax&&MathJax.Hub.Queue(["Typeset",MathJax.Hub,e])'
new = ('void 0!==window.MathJax&&(MathJax.Hub?MathJax.Hub.Queue(["Typeset",MathJax.Hub,e]):'
       'MathJax.typesetPromise&&MathJax.typesetPromise([e]).catch(function(){}))')
if src.count(old) != 1:
    sys.exit(f"vendor_widgets.sh: expected one MathJax 2 typeset call in {path}, found {src.count(old)}")
open(path, "w", encoding="utf-8").write(src.replace(old, new))
PY
cp rq/require.js "$dest/require.js"
# RequireJS resolves the bundle's module URI (from which webpack derives where
# the fonts live) against the page's folder; point it at this folder instead.
cat > "$dest/require-config.js" <<'JS'
// Written by tools/vendor_widgets.sh. Loaded after require.js and before
// embed-amd.js: the widget bundle locates its font files from its RequireJS
// module URI, which must resolve to this folder, not to the page's folder.
(function () {
  var here = document.currentScript.src.replace(/[?#].*$/, "").replace(/\/[^\/]*$/, "");
  require.config({ paths: { "@jupyter-widgets/html-manager/dist": here } });
})();
JS
cat > "$dest/README" <<TXT
Vendored by tools/vendor_widgets.sh (do not edit by hand):
  $HTML_MANAGER  dist/embed-amd.js and its Font Awesome fonts (BSD-3-Clause, LICENSE.html-manager;
                 bundled third-party licenses in LICENSE.third-party.txt)
  $REQUIREJS     require.js (MIT, license in its header)
  require-config.js  (ours) tells RequireJS where the bundle lives, so its fonts load
embed-amd.js is patched in one place: widget labels are typeset with MathJax 3's
typesetPromise when the page has no MathJax 2 (MathJax.Hub).
TXT
du -sh "$dest"
