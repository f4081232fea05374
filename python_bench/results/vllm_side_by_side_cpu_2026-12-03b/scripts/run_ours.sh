#!/bin/bash
# usage: run_ours.sh before|after OUTDIR REPEATS
# Each side imports its own worktree (/work/before, /work/after) with its own built extension,
# ahead of the editable install of /work/main.
set -e
which=$1; out=$2; reps=$3
ARGS="bench e2e --preset cpu-vllm --policies dense schedule:3:0.75 --repeats $reps --threads 2 --no-plots --no-progress --out $out"
root=/work/$which
cd $root
/work/main/.venv/bin/python -c "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; sys.path.insert(0, '$root'); import dyrate_engine; assert dyrate_engine.__file__.startswith('$root'), dyrate_engine.__file__; from dyrate_engine.cli import main; sys.exit(main(sys.argv[1:]))" $ARGS
