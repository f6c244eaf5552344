#!/usr/bin/env bash
# Runs the whole test suite twice, once per Keras, each in its own process (TensorFlow
# fixes its Keras at import): Keras 3, then tf_keras (TF_USE_LEGACY_KERAS=1).
# Extra arguments go to pytest (e.g. `-m slow`). Fails if either run fails or runs no test.
set -u
cd "$(dirname "$0")/.."
status=0
for legacy in 0 1; do
  name=$([ "$legacy" = 1 ] && echo "tf_keras (TF_USE_LEGACY_KERAS=1)" || echo "Keras 3")
  echo "===== test suite on $name ====="
  TF_USE_LEGACY_KERAS=$legacy python -m pytest "$@"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "===== FAILED on $name (pytest exit $rc; 5 means no test ran) ====="
    status=1
  fi
done
exit $status
