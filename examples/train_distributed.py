"""Train with fastai_imbalance on several GPUs (or CPU processes): the script of the docs page "Training on several GPUs".

Launch one process per GPU:

    accelerate launch --multi_gpu --num_processes 2 examples/train_distributed.py
    torchrun --nproc_per_node 2 examples/train_distributed.py          # the same, without Accelerate's launcher

Without GPUs, the same commands start CPU processes that talk over gloo (the script passes `cpu=True` to Accelerate).
Every rank trains on its slice of one global class-resampled draw per epoch, the metrics are reduced over all ranks,
`PriorShift` estimates the same priors on every rank, and only rank 0 writes the export.
"""
import argparse, warnings
from pathlib import Path
import torch
from fastai.vision.all import ImageDataLoaders, vision_learner, resnet18, set_seed
from fastai.distributed import rank_distrib, num_distrib
from fastai_imbalance.all import *

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--bs', type=int, default=32, help='batch size per process')
    p.add_argument('--out', default='distributed_out', help='folder for the exported learner')
    a = p.parse_args()
    warnings.filterwarnings('ignore', message='.*torch.jit.script.*')
    set_seed(0)
    path = digits_lt()  # rank 0 and the others may race to write it: the build is atomic and reused (see `digits_lt`)
    dls = ImageDataLoaders.from_folder(path, valid='valid', bs=a.bs, num_workers=0).resampled('sqrt')
    learn = vision_learner(dls, resnet18, pretrained=False, cbs=BalancedFinetune(cache=False),  # DDP: the stage through the body (a cache needs one process)
                           metrics=[BalancedAccuracy(), MacroF1(), CohenKappa(), RocAuc()])
    gpu = torch.cuda.is_available()
    with learn.distrib_ctx(sync_bn=gpu, cpu=not gpu):  # fastai's DDP context (Accelerate underneath)
        learn.fit_one_cycle(a.epochs, 3e-3)
    names = [m.name for m in learn.metrics]
    print(f"rank {rank_distrib()} of {num_distrib()}: " + ', '.join(f'{n} {v:.4f}' for n,v in zip(names, learn.recorder.values[-1][2:])))
    Path(a.out).mkdir(exist_ok=True)
    learn.export(Path(a.out).absolute()/'model.pkl')  # fastai writes on rank 0 only

if __name__ == '__main__': main()
