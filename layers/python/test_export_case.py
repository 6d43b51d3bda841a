"""Tests of export_case.py. Run where torch and torch_geometric are installed:

    ~/pyg/bin/python -m unittest discover -s layers/python -v

Elsewhere every test is reported as skipped, with the reason.
"""

import json
import sys
import tempfile
import unittest
from pathlib import Path

try:
    import torch
    import torch_geometric  # noqa: F401
    from safetensors import safe_open
except ImportError as e:  # pragma: no cover - depends on the environment
    MISSING = f"needs torch, torch_geometric and safetensors ({e})"
else:
    MISSING = None

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@unittest.skipIf(MISSING is not None, MISSING or "")
class ExportCaseTest(unittest.TestCase):
    def setUp(self):
        import demo_model
        import export_case

        self.export_case = export_case
        self.model, self.inputs = demo_model.make()
        self.tmp = tempfile.TemporaryDirectory()
        self.out = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def test_finds_every_layer_by_walking_named_modules(self):
        names = [n for n, _ in self.export_case.find_layers(self.model)]
        self.assertEqual(names, ["mem1", "mem2", "pool"])

    def test_layers_named_by_the_user_and_bad_names(self):
        paths = self.export_case.export_cases(self.model, self.inputs, self.out, layers=["mem2"])
        self.assertEqual([p.name for p in paths], ["mem2.safetensors"])
        with self.assertRaisesRegex(ValueError, "no module named 'nope'"):
            self.export_case.find_layers(self.model, ["nope"])
        with self.assertRaisesRegex(ValueError, "is a Linear"):
            self.export_case.find_layers(self.model, ["lin_in"])
        with self.assertRaisesRegex(ValueError, "holds no"):
            self.export_case.find_layers(torch.nn.Linear(2, 2))

    def test_forward_only_case_records_the_call_as_the_model_made_it(self):
        outputs = {}
        handle = self.model.mem1.register_forward_hook(
            lambda m, a, o: outputs.setdefault("mem1", o))
        self.model(*self.inputs)
        handle.remove()
        [path] = self.export_case.export_cases(self.model, self.inputs, self.out, layers=["mem1"])
        t, meta = read(path)
        self.assertEqual(meta["layer"], "MemPooling")
        self.assertEqual(json.loads(meta["args"]), {
            "in_channels": 6, "out_channels": 8, "heads": 2, "num_clusters": 3, "tau": 1.0})
        self.assertNotIn("loss", meta)
        self.assertFalse(any(k.startswith(("lossw.", "expect.grad.")) for k in t))
        self.assertEqual(set(k for k in t if k.startswith("param.")),
                         {"param.k", "param.conv.weight", "param.lin.weight"})
        self.assertTrue(torch.equal(t["input.batch"], self.inputs[1]))
        self.assertTrue(torch.equal(t["pyg32.out"], outputs["mem1"][0]))
        self.assertTrue(torch.equal(t["pyg32.S"], outputs["mem1"][1]))
        self.assertEqual(t["expect.out"].dtype, torch.float64)
        self.assertLess((t["expect.out"] - t["pyg32.out"].double()).abs().max().item(), 1e-5)
        # The layer's input is the model's hidden features, not the model's input.
        h = self.model.lin_in(self.inputs[0]).relu()
        self.assertTrue(torch.equal(t["input.x"], h))

    def test_dense_call_and_equilibrium_arguments(self):
        paths = self.export_case.export_cases(self.model, self.inputs, self.out)
        t, meta = read(self.out / "mem2.safetensors")
        self.assertEqual(t["input.x"].dim(), 3)
        self.assertNotIn("input.batch", t)
        t, meta = read(self.out / "pool.safetensors")
        self.assertEqual(json.loads(meta["args"]), {
            "in_channels": 6, "out_channels": 4, "num_layers": [8, 8], "grad_iter": 2,
            "lamb": 0.2})
        self.assertEqual(json.loads(meta["forward"]), {"dim_size": 4})
        self.assertTrue(torch.equal(t["input.index"], self.inputs[1]))
        self.assertIn("param.optimizer._lr", t)
        self.assertEqual(len(paths), 3)

    def test_gradient_case_holds_loss_weights_and_float64_gradients(self):
        self.export_case.export_cases(self.model, self.inputs, self.out, gradients=True, kl_weight=0.5)
        t, meta = read(self.out / "mem1.safetensors")
        self.assertEqual(json.loads(meta["kl_weight"]), 0.5)
        self.assertEqual(meta["loss"], self.export_case.MP_LOSS)
        for key in ["k", "conv.weight", "lin.weight", "input.x"]:
            self.assertEqual(t[f"expect.grad.{key}"].dtype, torch.float64)
        self.assertEqual(t["expect.grad.conv.weight"].shape, (1, 2, 1, 1))
        # The loss is what the format says, from the stored tensors.
        loss = ((t["expect.out"] * t["lossw.out"].double()).sum()
                + (t["expect.S"] * t["lossw.S"].double()).sum() + 0.5 * t["expect.kl_loss"][0])
        self.assertAlmostEqual(loss.item(), t["expect.loss"][0].item(), places=10)
        t, meta = read(self.out / "pool.safetensors")
        self.assertEqual(meta["loss"], self.export_case.EQ_LOSS)
        self.assertIn("expect.grad.lamb", t)
        self.assertGreater(t["expect.grad.lamb"].abs().item(), 0)

    def test_a_layer_called_twice_gives_two_cases(self):
        class Twice(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.aggr = inner

            def forward(self, x):
                return self.aggr(x) + self.aggr(2 * x)

        model = Twice(self.model.pool)
        x = torch.randn(4, 6)
        paths = self.export_case.export_cases(model, (x,), self.out)
        self.assertEqual([p.name for p in paths], ["aggr_call0.safetensors", "aggr_call1.safetensors"])
        t, _ = read(paths[1])
        self.assertTrue(torch.equal(t["input.x"], 2 * x))

    def test_command_line(self):
        spec = f"{HERE / 'demo_model.py'}:make"
        self.export_case.main([spec, str(self.out), "--layers", "pool", "--gradients"])
        t, _ = read(self.out / "pool.safetensors")
        self.assertIn("expect.grad.input.x", t)



@unittest.skipIf(MISSING is not None, MISSING or "")
class WholeModelRoundTripTest(unittest.TestCase):
    """torch -> readout is tested in Rust (layers/tests/exported.rs loads
    weights/whole_model.safetensors by prefix); this is readout -> torch: the three
    layers' weights as readout saved them load into the PyG model with torch's own
    ``load_state_dict`` and equal the values torch wrote."""

    def test_torch_loads_the_layers_readout_saved(self):
        import demo_model
        from safetensors.torch import load_file

        data = HERE.parent / "tests" / "data" / "weights"
        saved = load_file(str(data / "whole_model_layers_saved_by_readout.safetensors"))
        original = load_file(str(data / "whole_model.safetensors"))
        model, _ = demo_model.make(seed=0)
        result = model.load_state_dict(saved, strict=False)
        self.assertEqual(result.unexpected_keys, [])
        self.assertEqual(sorted(result.missing_keys),
                         ["head.bias", "head.weight", "lin_in.bias", "lin_in.weight"])
        state = model.state_dict()
        for key, value in saved.items():
            self.assertTrue(torch.equal(state[key], original[key]), key)

if __name__ == "__main__":
    unittest.main()
