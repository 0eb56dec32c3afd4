"""Benchmarks against the live stack. `python -m bench.pipeline` is the scan-pipeline benchmark
(throughput, end-to-end latency, profile, peak RSS) with its two baselines, a quixstreams
pass-through (`bench.passthrough`) and a naive per-event consumer (`bench.naive`)."""
