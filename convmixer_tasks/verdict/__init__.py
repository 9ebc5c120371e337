"""The verdict: the gate's rules for accuracy, fidelity evidence and throughput."""
