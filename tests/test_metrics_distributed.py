"""The metrics under two gloo processes, in the three situations a distributed run meets:
1. a sharded validation (fastai's `DistributedDL`, an odd validation set so one rank gets a padding row): every rank reports the one-process value;
2. `learn.validate()` after `distrib_ctx` has exited, each rank scoring the whole set: no reduction, no doubled counts;
3. only rank 0 scoring (`get_preds`, `ImbalanceInterpretation`, `threshold_for` with the metrics attached), and a validation whose whole shard is
   padding on one rank: no rank waits forever in a collective (the process group has a 60 s timeout, so a hang fails the test).
"""
import os, warnings
from datetime import timedelta
import numpy as np, pytest, torch
from test_distributed import spawn_ranks, gloo_rank, dump


def _metrics():
    from fastai_imbalance.metrics import CohenKappa, BalancedAccuracy, MacroF1, GMean, RocAuc, AveragePrecision, SensitivityAtSpecificity
    return [CohenKappa(), CohenKappa(weights='quadratic'), BalancedAccuracy(), MacroF1(), GMean(), RocAuc(), RocAuc(average='weighted'),
            RocAuc(multi_class='ovo'), RocAuc(thresholds=256), AveragePrecision(), AveragePrecision(thresholds=256), SensitivityAtSpecificity(0.9)]


def _dls(path, n_valid=None):
    from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, parent_label, GrandparentSplitter, get_image_files
    files = [f for f in get_image_files(path) if not (f.parent.parent.name == 'valid' and f == sorted((path/'valid'/'9').glob('*.png'))[0])]
    if n_valid is not None: files = [f for f in files if f.parent.parent.name == 'train'] + [f for f in files if f.parent.parent.name == 'valid'][::50][:n_valid]
    db = DataBlock((ImageBlock, CategoryBlock), get_y=parent_label, splitter=GrandparentSplitter(valid_name='valid'))
    return db.dataloaders(files, bs=16, num_workers=0)


def _learner(path, n_valid=None, metrics=None):
    import sys; sys.path.insert(0, os.path.dirname(__file__))
    from conftest import tiny_arch
    from fastai.vision.all import vision_learner
    import fastai_imbalance.data  # noqa: F401  (DistributedDL's broadcast on gloo)
    learn = vision_learner(_dls(path, n_valid), tiny_arch, pretrained=False, metrics=_metrics() if metrics is None else metrics)
    return learn


def _worker(rank, world, port, path, out):
    warnings.filterwarnings('ignore')
    with gloo_rank(rank, world, port, timeout=timedelta(seconds=60)):
        from pathlib import Path
        import torch.distributed as dist
        from fastai_imbalance.interpret import ImbalanceInterpretation
        from fastai_imbalance.core import local_inference
        learn = _learner(Path(path))
        learn.model.load_state_dict(torch.load(os.path.join(out, 'weights.pt')))
        with learn.distrib_ctx(sync_bn=False, cpu=True):
            sharded = [float(v) for v in learn.validate()[1:]]
        local = int(learn.metrics[0].counts[1].sum())  # items this rank accumulated in the sharded pass, padding dropped
        with learn.no_bar(): whole = [float(v) for v in learn.validate()[1:]]  # after the context: each rank scores everything
        support = int(learn.metrics[3].per_class().support.sum())  # a ratio survives doubled counts; the support does not
        alone = None
        if rank == 0:  # rank 1 waits at the barrier: a collective here would hang until the timeout
            with learn.no_bar(), local_inference(learn):  # fastai's own get_preds would all-gather across the ranks
                p, y = learn.get_preds()
                interp = ImbalanceInterpretation.from_learner(learn)
            alone = [float(p.sum()), int(interp.confusion_matrix().sum())]
        dist.barrier()
        tiny = _learner(Path(path), n_valid=1)  # one validation item: rank 1's shard is all padding (metrics sharing a store included)
        tiny.model.load_state_dict(torch.load(os.path.join(out, 'weights.pt')))
        with tiny.distrib_ctx(sync_bn=False, cpu=True):
            padded = [None if v is None else float(v) for v in tiny.validate()[1:]]
            tiny.metrics[3]._shard = True  # as after the sharded pass: per_class reduces too, on every rank
            padded_support = int(tiny.metrics[3].per_class().support.sum())
        dump(out, 'm', rank, dict(sharded=sharded, whole=whole, support=support, local=local, alone=alone, padded=padded, padded_support=padded_support))


def test_metrics_across_two_ranks(lt_path, tmp_path):
    from fastai.vision.all import set_seed
    set_seed(0)
    learn = _learner(lt_path)
    assert len(learn.dls.valid_ds) == 499  # odd: DistributedDL pads rank 1 with one repeated item
    with learn.no_bar(), learn.no_logging(): learn.fit(1)  # weights that rank something
    torch.save(learn.model.state_dict(), tmp_path/'weights.pt')
    with learn.no_bar(): single = [float(v) for v in learn.validate()[1:]]
    tiny = _learner(lt_path, n_valid=1)
    tiny.model.load_state_dict(learn.model.state_dict())
    with tiny.no_bar(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tiny_single = [float(v) for v in tiny.validate()[1:]]
    r = spawn_ranks(_worker, 'm', lt_path, tmp_path)
    assert [o['local'] for o in r] == [250, 249]  # the padding row was dropped
    for o in r:
        np.testing.assert_allclose(o['sharded'], single, rtol=0, atol=1e-9)  # 1. the sharded pass reduces to the one-process value
        np.testing.assert_allclose(o['whole'], single, rtol=0, atol=1e-9)    # 2. after the context: not doubled
        assert o['support'] == 499
        np.testing.assert_allclose(o['padded'], tiny_single, rtol=0, atol=1e-9)  # 3b. a rank with only padding takes part and agrees
        assert o['padded_support'] == 1
    assert r[0]['alone'][1] == 499 and r[1]['alone'] is None  # 3a. rank 0 scored alone, without waiting for rank 1
    assert len(set(np.round(single, 6))) > 3  # the metrics measured something
