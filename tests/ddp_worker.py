"""Run by test_distributed.py under torchrun: a few steps of data-parallel training with an
aggregator, then each rank writes its weights for the test to compare."""

import sys

import torch
from safetensors.torch import save_file

from polyhead.config import load_config
from polyhead.training.trainer import Trainer

corpus, run, out, aggregator = sys.argv[1:5]
torch.set_num_threads(1)
cfg = load_config("scratch", [f"corpus={corpus}", "encoder.dim=48", "encoder.layers=2", "train.steps=3",
                           "train.eval_every=1000", "train.time_budget_s=null", "~tasks.lid", "~tasks.vad",
                           "~train.weighting.options.weights.lid", "~train.weighting.options.weights.vad",
                           "tasks.speaker.train_sets=[speaker_train]", f"train.aggregator.name={aggregator}"])
trainer = Trainer(cfg, run, progress=False)
for _ in range(3):
    trainer.train_step()
rank = trainer.dist.rank
save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, f"{out}/rank{rank}.safetensors")
# Different ranks must have seen different data (the sampler splits across ranks).
with open(f"{out}/rank{rank}.ids", "w") as f:
    f.write("\n".join(trainer.streams["asr"].next(99).cut_ids))
trainer.dist.close()
