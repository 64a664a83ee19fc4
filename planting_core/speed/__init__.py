"""Speed paths: a round's candidates trained fused (one batched computation, CUDA), a training step replayed from a
CUDA graph, candidates on a CPU's cores at once, and torchrun. Each changes how fast a run goes, never what it
learns beyond float rounding."""
