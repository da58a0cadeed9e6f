#!/bin/sh
# Runs the test suite on the CPU (sets up .venv on first use). Extra arguments go to pytest.
set -e
cd "$(dirname "$0")"
. tools/setup_env.sh
set +e
"$PY" -m pytest tests -q -p no:cacheprovider "$@"
rc=$?
if [ $rc -eq 5 ]; then
    echo "run_tests.sh: pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit $rc
