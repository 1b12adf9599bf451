# Sourced by the build checks in .ci/. package_copy OUT: OUT/pkg becomes a copy
# of the checkout's package with the module built into OUT/lib in place of the
# checkout's own, to import with PYTHONPATH=OUT/pkg and python -P.
package_copy() {
  local out=$1
  rm -rf "$out/pkg"
  mkdir -p "$out/pkg"
  cp -r structinf "$out/pkg/"
  rm -f "$out"/pkg/structinf/_C*.so
  cp "$out"/lib/structinf/_C*.so "$out/pkg/structinf/"
  find "$out/pkg" -name __pycache__ -prune -exec rm -rf {} +
}
