"Two CPU processes (torch.distributed, gloo) through fastai's DistributedDL: one global resampled draw, sliced per rank."
import os, socket, json, warnings
from contextlib import contextmanager
import numpy as np, pytest, torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def spawn_ranks(worker, name, *args, world=2):
    "Run `worker(rank, world, port, *args)` on `world` gloo ranks; `args[-1]` is the folder where each wrote `{name}{rank}.json`"
    mp.spawn(worker, args=(world, _free_port(), *map(str, args)), nprocs=world, join=True)
    return [json.load(open(os.path.join(str(args[-1]), f'{name}{i}.json'))) for i in range(world)]


def checksum(model): return float(sum(p.detach().double().sum() for p in model.parameters()))


@contextmanager
def gloo_rank(rank, world, port, timeout=None):
    "This process as rank `rank` of a gloo group of `world` processes (with the environment fastai and Accelerate read); `timeout`: collectives fail instead of hanging"
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # ranks × default threads oversubscribe the cores (6x slower on 2)
    dist.init_process_group('gloo', rank=rank, world_size=world, **({} if timeout is None else dict(timeout=timeout)))
    try: yield
    finally: dist.destroy_process_group()


def dump(out, name, rank, res): json.dump(res, open(os.path.join(out, f'{name}{rank}.json'), 'w'))


def _worker(rank, world, port, path, out, epochs):
    warnings.filterwarnings('ignore')
    with gloo_rank(rank, world, port):
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
            ddl.dl.before_iter()  # a training pass: ResampledDL draws only when iterated
            full = [int(i) for i in ddl.dl.get_idxs()]  # this rank's own global draw, before any broadcast
            ddl.dl.rng.setstate(st)
            ddl.before_iter()
            mine = ddl.get_idxs()     # rank 0's draw, broadcast, then this rank's slice
            res['epochs'].append({'mine': mine, 'full_own': full})
        for xb, yb in ddl:  # a real pass through the wrapped loader
            res['batches'] += 1; res['bs'] = int(xb.shape[0])
        dump(out, 'rank', rank, res)


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


def _fit_worker(rank, world, port, path, out):
    warnings.filterwarnings('ignore')
    with gloo_rank(rank, world, port):
        import sys; sys.path.insert(0, os.path.dirname(__file__))
        from conftest import tiny_arch
        from accelerate import DistributedDataParallelKwargs
        from fastai.vision.all import ImageDataLoaders, vision_learner, Callback, set_seed, TfmdDL
        from fastai.distributed import DistributedDL
        from fastai_imbalance.finetune import BalancedFinetune
        set_seed(0)
        dls = ImageDataLoaders.from_folder(path, valid='valid', bs=16, num_workers=0)
        seen = []
        class Probe(Callback):
            order = 50
            def before_train(self):
                inner = self.learn.dl.dl if isinstance(self.learn.dl, DistributedDL) else self.learn.dl
                body = self.model.module[0] if hasattr(self.model, 'module') else self.model[0]
                seen.append([type(self.learn.dl).__name__, type(inner).__name__, len(self.learn.dl), checksum(body)])
        learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=BalancedFinetune(epochs=1, reinit=True))  # each rank re-initialises: rank 0's draw must reach every rank
        with learn.distrib_ctx(sync_bn=False, cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]):
            learn.fit(2, cbs=Probe())
        res = dict(seen=seen, restored=type(learn.dls.train).__name__, all_grad=all(p.requires_grad for p in learn.model.parameters()),
                   checksum=checksum(learn.model), body_end=checksum(learn.model[0]))
        dump(out, 'fit', rank, res)


def test_balanced_finetune_under_ddp(lt_path, tmp_path):
    r = spawn_ranks(_fit_worker, 'fit', lt_path, tmp_path)
    for o in r:
        assert [s[:2] for s in o['seen']] == [['DistributedDL', 'TfmdDL'], ['DistributedDL', 'ResampledDL']]
        assert o['seen'][1][3] == pytest.approx(o['body_end'], abs=0) != o['seen'][0][3]  # the body trained in epoch 0, not in the head-only stage
        assert o['restored'] == 'TfmdDL' and o['all_grad']
    assert r[0]['checksum'] == pytest.approx(r[1]['checksum'], rel=1e-6)  # the ranks trained one model
