"""A small resumable job for test_resume.py: teacher, initial network, then planting, all in `out`."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import planting_core as pc  # noqa: E402
from conftest import make_data  # noqa: E402

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
data = make_data(n_train=512, n_val=128, n_test=128)
cfg = pc.TrainConfig(epochs=8, lr=0.02, batch_size=32, progress=False)
if not (out / "teacher.pt").exists():
    torch.manual_seed(0)
    teacher = pc.PlainCNN([16] * 5, **data.model_kwargs())
    pc.fit(teacher, data, cfg, checkpoint=out / "teacher.state.pt")
    pc.save_checkpoint(teacher, out / "teacher.pt")
teacher = pc.load_checkpoint(out / "teacher.pt")
torch.manual_seed(1)
initial = pc.PlainCNN([4] * 5, **data.model_kwargs())
pc.fit(initial, data, pc.TrainConfig(epochs=1, lr=0.02, batch_size=32, progress=False))
grow_cfg = pc.GrowConfig(channels=2, max_rounds=3, stop="fixed-rounds",
                         train=pc.TrainConfig(epochs=4, lr=0.01, batch_size=32, loss="kd", progress=False))
result = pc.grow(initial, teacher, data, grow_cfg, out_dir=out, progress=False)
print("done", result.model.widths)
