// Written by tools/vendor_widgets.sh. Loaded after require.js and before
// embed-amd.js: the widget bundle locates its font files from its RequireJS
// module URI, which must resolve to this folder, not to the page's folder.
(function () {
  var here = document.currentScript.src.replace(/[?#].*$/, "").replace(/\/[^\/]*$/, "");
  require.config({ paths: { "@jupyter-widgets/html-manager/dist": here } });
})();
