"""A small PyG model holding both layers among other modules: the model the exporter's
tests and readout's committed exported cases come from.

    ~/pyg/bin/python layers/python/demo_model.py layers/tests/data

writes, under that directory, ``exported/forward/*.safetensors`` (forward-only cases),
``exported/gradients/*.safetensors`` (with loss weights and float64 gradients,
MemPooling's KL term weighted 0.5) and ``weights/whole_model.safetensors``: the whole model's
``state_dict`` as ``safetensors.torch.save_file`` writes it (keys
``pool.potential.layers.0.0.weight``, ``mem1.k``, ``mem2.conv.weight``, ``lin_in.weight``,
...), for loading each layer by its key prefix.

Also a factory for the command line: ``export_case.py layers/python/demo_model.py:make cases/``.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch_geometric.nn import MemPooling
from torch_geometric.nn.aggr import EquilibriumAggregation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_case import export_cases  # noqa: E402


class DemoModel(torch.nn.Module):
    """Node features -> linear -> (MemPooling -> MemPooling on the dense clusters) and
    (EquilibriumAggregation over each graph's nodes) -> linear head."""

    def __init__(self):
        super().__init__()
        self.lin_in = torch.nn.Linear(3, 6)
        self.mem1 = MemPooling(6, 8, heads=2, num_clusters=3, tau=1.0)
        self.mem2 = MemPooling(8, 5, heads=3, num_clusters=1, tau=0.5)
        self.pool = EquilibriumAggregation(6, 4, num_layers=[8, 8], grad_iter=2, lamb=0.2)
        self.head = torch.nn.Linear(5 + 4, 2)

    def forward(self, x, batch):
        h = self.lin_in(x).relu()
        clusters, _ = self.mem1(h, batch)          # [B, 3, 8]
        summary, _ = self.mem2(clusters)            # dense path: [B, 1, 5]
        pooled = self.pool(h, batch)                # [B, 4]
        return self.head(torch.cat([summary.squeeze(1), pooled], dim=-1))


def make(seed=7):
    """The model (seeded) and an example batch: four graphs of 5, 1, 7 and 3 nodes,
    the nodes not sorted by graph for the aggregation (index order as given)."""
    torch.manual_seed(seed)
    model = DemoModel()
    sizes = [5, 1, 7, 3]
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    x = torch.randn(int(batch.numel()), 3)
    return model, (x, batch)


def main(data_dir):
    data_dir = Path(data_dir)
    model, inputs = make()
    export_cases(model, inputs, data_dir / "exported" / "forward")
    export_cases(model, inputs, data_dir / "exported" / "gradients", gradients=True,
                 kl_weight=0.5, seed=1)
    # A second model with other weights, saved whole: the prefix-loading tests.
    other, _ = make(seed=11)
    (data_dir / "weights").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()},
              str(data_dir / "weights" / "whole_model.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
