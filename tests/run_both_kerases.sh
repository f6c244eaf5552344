#!/usr/bin/env bash
# Runs the whole test suite twice, once per Keras, each in its own processes (TensorFlow
# fixes its Keras at import): Keras 3, then tf_keras (TF_USE_LEGACY_KERAS=1).
# Each run spreads its test files over one pytest-xdist worker per CPU core (most tests
# are small models whose time goes to one Python thread, so two cores run the suite in
# about half the time); DNNOPT_TEST_WORKERS=N sets the number (0: no workers, in-process).
# Extra arguments go to pytest (e.g. `-m slow`). Fails if either run fails or runs no test.
set -u
cd "$(dirname "$0")/.."
workers=${DNNOPT_TEST_WORKERS:-auto}
parallel=()
if [ "$workers" != 0 ] && python -c "import xdist" 2>/dev/null; then
  parallel=(-n "$workers" --dist loadfile)
fi
status=0
for legacy in 0 1; do
  name=$([ "$legacy" = 1 ] && echo "tf_keras (TF_USE_LEGACY_KERAS=1)" || echo "Keras 3")
  echo "===== test suite on $name ====="
  TF_USE_LEGACY_KERAS=$legacy python -m pytest "${parallel[@]}" "$@"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "===== FAILED on $name (pytest exit $rc; 5 means no test ran) ====="
    status=1
  fi
done
exit $status
