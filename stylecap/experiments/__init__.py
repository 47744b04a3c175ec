"""Experiments: runs that measure the tool rather than serve a user's data — the demo and the
quality bench (``demo``), the σ/adapter sweep (``sweep``), the speed benches (``speed``,
``generate_speed``). They share one variant runner (``variants``) and one report shape
(``report``); grids and target bars are data (``benchmarks/plan.toml``). Nothing in the core or the
workflows imports them."""
