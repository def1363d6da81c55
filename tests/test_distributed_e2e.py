"""End to end under two gloo processes, as a user runs it: `vision_learner(..., cbs=BalancedFinetune())` on a resampled
`digits_lt` through `learn.distrib_ctx()`, with this library's metrics and `PriorShift('estimate')`, then `learn.export()`.

Checks: every epoch, both ranks receive the same global draw (rank 0's, broadcast) and train on disjoint halves of it, with
the class mix of the stage's strategy; the metrics the ranks report equal a single-process validation of the final weights;
the estimated priors, the calibration and the corrected predictions are the same on every rank and equal a single-process
`estimate_priors`; only rank 0 writes the export, which loads in this (fresh) process and predicts as rank 0 did.
"""
import warnings
import numpy as np, pytest, torch
from test_distributed import spawn_ranks, checksum, gloo_rank, dump

EPOCHS = 2  # BalancedFinetune: a quarter of the epochs, at least one (here the second) is the balanced stage


def _metrics():
    from fastai_imbalance.metrics import BalancedAccuracy, MacroF1, CohenKappa, RocAuc, AveragePrecision, GMean
    return [BalancedAccuracy(), MacroF1(), CohenKappa(), RocAuc(), AveragePrecision(), GMean()]


def _setup(path):
    "Loaders (resampled 'sqrt' for the first stage), the unlabelled target set (valid scans of digits 0-4 only: a prior shift)"
    from fastai.vision.all import ImageDataLoaders
    import fastai_imbalance.data  # noqa: F401  (DistributedDL's broadcast on gloo)
    dls = ImageDataLoaders.from_folder(path, valid='valid', bs=16, num_workers=0).resampled('sqrt')
    target = sorted(f for d in range(5) for f in (path/'valid'/str(d)).glob('*.png'))
    return dls, dls.test_dl(target)


def _worker(rank, world, port, path, out):
    warnings.filterwarnings('ignore')
    with gloo_rank(rank, world, port):
        from pathlib import Path
        from accelerate import DistributedDataParallelKwargs
        from fastai.vision.all import vision_learner, resnet18, set_seed
        from fastai.distributed import DistributedDL
        from fastai_imbalance.data import ResampledDL
        from fastai_imbalance.finetune import BalancedFinetune
        from fastai_imbalance.priorshift import PriorShift
        from fastai_imbalance.core import local_inference
        set_seed(100 + rank)  # different seeds per rank: only the broadcast may align the draws
        path = Path(path)
        dls, target_dl = _setup(path)
        draws = []  # (strategy, global draw after the broadcast, this rank's slice), per training epoch
        orig_b, orig_g = DistributedDL._broadcast, DistributedDL.get_idxs
        def _broadcast(self, t, rank_):
            r = orig_b(self, t, rank_)
            if isinstance(self.dl, ResampledDL): self._seen = [int(i) for i in r]
            return r
        def get_idxs(self):
            mine = orig_g(self)
            if isinstance(self.dl, ResampledDL): draws.append((str(self.dl.strategy), self._seen, [int(i) for i in mine]))
            return mine
        DistributedDL._broadcast, DistributedDL.get_idxs = _broadcast, get_idxs
        ps = PriorShift('estimate', dl=target_dl)
        learn = vision_learner(dls, resnet18, pretrained=False, metrics=_metrics(), cbs=[BalancedFinetune(), ps])
        with warnings.catch_warnings(record=True) as caught, learn.distrib_ctx(sync_bn=False, cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]):
            warnings.simplefilter('always')
            learn.fit_one_cycle(EPOCHS, 3e-3)
        fallback = [str(w.message) for w in caught if "BalancedFinetune(cache='auto')" in str(w.message)]
        rec = [float(v) for v in learn.recorder.values[-1][2:2 + len(learn.metrics)]]  # the last epoch's metrics (then BalancedFinetune's stage column)
        with learn.no_bar(), local_inference(learn): p, _ = learn.get_preds(dl=target_dl)  # each rank alone, PriorShift applied
        with learn.no_bar(): pi = learn.estimate_priors(target_dl)  # this library's inference after the context, on each rank
        learn.export(Path(out)/f'export_from_rank{rank}.pkl')      # fastai: only rank 0 writes
        if rank == 0: torch.save(learn.model.state_dict(), Path(out)/'weights.pt')
        res = dict(draws=draws, labels=dls.train.labels.tolist(), rec=rec, priors=ps._tgt.tolist(), source=ps._src.tolist(), estimate=pi.tolist(),
                   cal=ps._cal.log_t.tolist() + ps._cal.b.tolist(), preds=p.tolist(), train_type=type(learn.dls.train).__name__,
                   checksum=checksum(learn.model), fallback=fallback)
        dump(out, 'e2e', rank, res)


def test_end_to_end_on_two_ranks(lt_path, tmp_path):
    from scipy import stats
    from fastai.learner import load_learner
    from fastai.vision.all import vision_learner, resnet18
    r = spawn_ranks(_worker, 'e2e', lt_path, tmp_path)
    labels = np.array(r[0]['labels'])
    counts = np.bincount(labels, minlength=10)

    # 1. one global draw per epoch, sliced: identical on both ranks, disjoint halves, stage strategy's class mix
    d0, d1 = r[0]['draws'], r[1]['draws']
    assert [d[0] for d in d0] == [d[0] for d in d1] == ['sqrt'] * (EPOCHS - 1) + ['balanced']
    for x in r:  # the default's cached stage needs one process: each rank's fit said it ran the stage through the body
        assert len(x['fallback']) == 1 and x['fallback'][0].startswith("BalancedFinetune(cache='auto'): under distributed training each rank would retrain on a cache of its own, so this fit's stage retrains fastai's head")
    pooled = {'sqrt': np.zeros(10), 'balanced': np.zeros(10)}
    for (s, g0, m0), (_, g1, m1) in zip(d0, d1):
        assert g0 == g1 and len(m0) == len(m1) == len(g0) // 2
        assert m0 + m1 == g0  # positional halves of the one draw (len(g0) is even here: no padding)
        pooled[s] += np.bincount(labels[g0], minlength=10)
    for s, p in pooled.items():
        w = np.sqrt(counts) if s == 'sqrt' else np.ones(10)
        exp = p.sum() * w / w.sum()
        assert ((p - exp) ** 2 / exp).sum() < stats.chi2.ppf(0.999, 9), (s, p, exp)
    assert r[0]['train_type'] == r[1]['train_type'] == 'ResampledDL'  # BalancedFinetune put the user's loader back
    assert r[0]['checksum'] == pytest.approx(r[1]['checksum'], rel=1e-9)  # one model

    # 2. the metrics the ranks reported (the model's own: PriorShift shifts at inference only) equal a single-process validation of the same weights
    from fastai_imbalance.priorshift import PriorShift
    dls, target_dl = _setup(lt_path)
    ps = PriorShift('estimate', dl=target_dl)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=_metrics(), cbs=ps)
    learn.model.load_state_dict(torch.load(tmp_path/'weights.pt'))
    with learn.no_bar(): single = [float(v) for v in learn.validate()[1:]]
    for o in r: np.testing.assert_allclose(o['rec'], single, rtol=0, atol=1e-6)
    assert len(set(np.round(single, 4))) > 3  # they measured something
    with learn.no_bar(): learn.get_preds(dl=target_dl)  # the estimate is made at the first prediction
    names = [m.name for m in learn.metrics]
    print('\nper epoch: ' + '; '.join(f"{s}: global draw {len(g)}, rank 0 {len(m0)}, rank 1 {len(m1)}" for (s, g, m0), (_, _, m1) in zip(d0, d1)))
    for s, p in pooled.items(): print(f"pooled class counts ({s}): {p.astype(int).tolist()}")
    for i, o in enumerate(r): print(f"rank {i} reported: " + ', '.join(f'{n} {v:.6f}' for n, v in zip(names, o['rec'])))
    print('one process:     ' + ', '.join(f'{n} {v:.6f}' for n, v in zip(names, single)))

    # 3. PriorShift('estimate') and its calibration agree across ranks and with one process
    for k in ('priors', 'source', 'cal', 'preds', 'estimate'): np.testing.assert_allclose(r[0][k], r[1][k], rtol=0, atol=1e-6)
    np.testing.assert_allclose(r[0]['priors'], ps._tgt.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(r[0]['estimate'], ps._tgt.numpy(), rtol=0, atol=1e-5)  # estimate_priors on a rank, after the context
    np.testing.assert_allclose(r[0]['cal'], ps._cal.log_t.tolist() + ps._cal.b.tolist(), rtol=0, atol=1e-5)
    assert np.asarray(r[0]['priors'])[:5].sum() > 0.8  # the shift to digits 0-4 was seen
    print(f"estimated target priors, rank 0: {np.round(r[0]['priors'], 3).tolist()}; rank 1 equal to 1e-6; one process equal to 1e-5")

    # 4. only rank 0 wrote the export; it loads here and predicts as rank 0 did
    assert (tmp_path/'export_from_rank0.pkl').exists() and not (tmp_path/'export_from_rank1.pkl').exists()
    served = load_learner(tmp_path/'export_from_rank0.pkl')
    with served.no_bar(): p, _ = served.get_preds(dl=served.dls.test_dl(target_dl.items))
    np.testing.assert_allclose(p.numpy(), np.asarray(r[0]['preds']), rtol=0, atol=1e-5)
