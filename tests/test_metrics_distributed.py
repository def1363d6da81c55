"The metrics under two gloo processes (fastai's DistributedDL, an odd validation set so one rank gets a padding row) equal one process's."
import os, warnings
import numpy as np, pytest, torch
from test_distributed import spawn_ranks, gloo_rank, dump


def _metrics():
    from fastai_imbalance.metrics import CohenKappa, BalancedAccuracy, MacroF1, GMean, RocAuc, AveragePrecision, SensitivityAtSpecificity
    return [CohenKappa(), CohenKappa(weights='quadratic'), BalancedAccuracy(), MacroF1(), GMean(), RocAuc(), RocAuc('weighted'),
            RocAuc('ovo'), RocAuc(thresholds=256), AveragePrecision(), AveragePrecision(thresholds=256), SensitivityAtSpecificity(0.9)]


def _dls(path):
    from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, parent_label, GrandparentSplitter, get_image_files
    files = [f for f in get_image_files(path) if not (f.parent.parent.name == 'valid' and f == sorted((path/'valid'/'9').glob('*.png'))[0])]
    db = DataBlock((ImageBlock, CategoryBlock), get_y=parent_label, splitter=GrandparentSplitter(valid_name='valid'))
    return db.dataloaders(files, bs=16, num_workers=0)


def _worker(rank, world, port, path, out):
    warnings.filterwarnings('ignore')
    with gloo_rank(rank, world, port):
        import sys; sys.path.insert(0, os.path.dirname(__file__))
        from conftest import tiny_arch
        from pathlib import Path
        from fastai.vision.all import vision_learner
        import fastai_imbalance.data  # noqa: F401  (DistributedDL's broadcast on gloo)
        dls = _dls(Path(path))
        mets = _metrics()
        learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=mets)
        learn.model.load_state_dict(torch.load(os.path.join(out, 'weights.pt')))
        with learn.distrib_ctx(sync_bn=False, cpu=True):
            vals = learn.validate()[1:]
        local = int(mets[0].state.sum())  # items this rank accumulated, padding dropped
        dump(out, 'm', rank, dict(vals=[float(v) for v in vals], local=local))


def test_metrics_reduce_across_two_ranks(lt_path, tmp_path):
    import sys; sys.path.insert(0, os.path.dirname(__file__))
    from conftest import tiny_arch
    from fastai.vision.all import vision_learner, set_seed
    set_seed(0)
    dls = _dls(lt_path)
    assert len(dls.valid_ds) == 499  # odd: DistributedDL pads rank 1 with one repeated item
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=_metrics())
    with learn.no_bar(), learn.no_logging(): learn.fit(1)  # weights that rank something
    torch.save(learn.model.state_dict(), tmp_path/'weights.pt')
    with learn.no_bar(): single = [float(v) for v in learn.validate()[1:]]
    r = spawn_ranks(_worker, 'm', lt_path, tmp_path)
    assert [o['local'] for o in r] == [250, 249]  # the padding row was dropped
    for o in r: np.testing.assert_allclose(o['vals'], single, rtol=0, atol=1e-9)
    assert len(set(np.round(single, 6))) > 3  # the metrics measured something
