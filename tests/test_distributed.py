"Two CPU processes (torch.distributed, gloo) through fastai's DistributedDL: one global resampled draw, sliced per rank."
import os, socket, json, warnings
import numpy as np, pytest, torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _worker(rank, world, port, path, out, epochs):
    warnings.filterwarnings('ignore')
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        from fastai.vision.all import ImageDataLoaders
        from fastai.distributed import DistributedDL
        import fastai_imbalance.data  # noqa: F401  (patches DistributedDL for gloo)
        from fastai_imbalance.data import ResampledDL
        import random
        random.seed(1000 + rank)  # different loader seeds per rank: the broadcast must make the draws agree
        dls = ImageDataLoaders.from_folder(path, valid='valid', bs=10, num_workers=0).resampled('balanced', n=250)
        own = dls.train.draw(np.random.default_rng(rank)).tolist()  # what this rank would draw alone
        ddl = DistributedDL(dls.train, rank=rank, world_size=world)
        res = {'own': own, 'epochs': [], 'labels': dls.train.labels.tolist(), 'batches': 0, 'len': len(ddl)}
        for e in range(epochs):
            ddl.randomize()
            st = ddl.dl.rng.getstate()
            full = [int(i) for i in ddl.dl.get_idxs()]  # this rank's own global draw, before any broadcast
            ddl.dl.rng.setstate(st)
            mine = ddl.get_idxs()     # rank 0's draw, broadcast, then this rank's slice
            res['epochs'].append({'mine': mine, 'full_own': full})
        for xb, yb in ddl:  # a real pass through the wrapped loader
            res['batches'] += 1; res['bs'] = int(xb.shape[0])
        json.dump(res, open(os.path.join(out, f'rank{rank}.json'), 'w'))
    finally:
        dist.destroy_process_group()


def test_two_ranks_share_one_resampled_draw(lt_path, tmp_path):
    world, epochs = 2, 20
    mp.spawn(_worker, args=(world, _free_port(), str(lt_path), str(tmp_path), epochs), nprocs=world, join=True)
    r = [json.load(open(tmp_path/f'rank{i}.json')) for i in range(world)]
    labels = np.array(r[0]['labels'])
    pooled = np.zeros(10, int)
    for e in range(epochs):
        a, b = r[0]['epochs'][e]['mine'], r[1]['epochs'][e]['mine']
        global_draw = r[0]['epochs'][e]['full_own']
        assert len(a) == len(b) == 125
        assert a + b == global_draw  # disjoint slices (by position) of rank 0's one draw
        assert r[1]['epochs'][e]['full_own'] != global_draw  # rank 1 drew something else alone: the broadcast is what aligns them
        pooled += np.bincount(labels[a + b], minlength=10)
    # pooled class proportions match 'balanced': 25 per class per epoch
    from scipy import stats
    exp = np.full(10, epochs * 250 / 10)
    assert ((pooled - exp) ** 2 / exp).sum() < stats.chi2.ppf(0.999, 9), pooled
    # each rank runs its 125 items in full batches of 10 (drop_last); fastai's DistributedDL.__len__ says 13, one too many with drop_last
    assert r[0]['batches'] == r[1]['batches'] == 125 // 10 and r[0]['bs'] == 10
