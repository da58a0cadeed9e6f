"""Parts of tools/bench_render.py: scene builder, timing harness, report, training-step comparison."""
