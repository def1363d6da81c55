"BalancedFinetune: the stage happens where documented, trains what it says, and everything is put back however the fit ends."
import re, subprocess, sys, warnings
import numpy as np, pytest, torch
from torch import nn
from fastai.vision.all import (ImageDataLoaders, vision_learner, resnet18, Learner, Callback, CrossEntropyLossFlat, accuracy,
                               CancelFitException, EarlyStoppingCallback, SaveModelCallback, load_learner, TfmdDL, set_seed)
from fastai_imbalance.data import ResampledDL
from fastai_imbalance.finetune import BalancedFinetune, last_linear
from conftest import tiny_arch


@pytest.fixture
def dls(lt_path): return ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0)


def quiet_fit(learn, n, **kw):
    with learn.no_bar(), learn.no_logging(): learn.fit(n, **kw)


class Probe(Callback):
    "Record, per epoch, the training loader type, trainable parameter count, loss and learning rates"
    order = 50
    def before_fit(self): self.rows = []
    def before_train(self):
        self.rows.append(dict(dl=type(self.dls.train).__name__, trainable=sum(p.requires_grad for p in self.model.parameters()),
                              loss=type(self.learn.loss_func).__name__, lrs=[]))
    def after_batch(self):
        if self.training: self.rows[-1]['lrs'].append(self.opt.hypers[-1]['lr'])


class RaiseAt(Callback):
    "Raise `exc` after training batch `it` of epoch `epoch` (fastai counts both from 0)"
    order = 50
    def __init__(self, epoch, it, exc): self.at,self.exc = (epoch, it),exc
    def after_batch(self):
        if self.training and (self.epoch, self.iter) == self.at: raise self.exc()


def assert_restored(learn, dls, n_metrics=0):
    assert learn.dls.train is dls.train and type(learn.dls.train) is TfmdDL
    assert all(p.requires_grad for p in learn.model.parameters())
    assert len(learn.metrics) == n_metrics and type(learn.loss_func) is CrossEntropyLossFlat
    assert getattr(learn.loss_func.func, 'weight', None) is None


def test_head_stage_trains_only_the_head_with_its_schedule(dls):
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=accuracy, cbs=BalancedFinetune(epochs=2, cache=False))
    probe = Probe()
    snap = {}
    class Snap(Callback):
        order = 60
        def before_train(self):
            if self.epoch == 2:  # first stage epoch, after BalancedFinetune's switch
                snap['body'] = [p.detach().clone() for p in self.model[0].parameters()]
                snap['bn'] = [m.running_mean.clone() for m in self.model[0].modules() if isinstance(m, nn.BatchNorm2d)]
                snap['head'] = [p.detach().clone() for p in self.model[1].parameters()]
    quiet_fit(learn, 4, lr=1e-2, cbs=[probe, Snap()])
    r = probe.rows
    assert [o['dl'] for o in r] == ['TfmdDL', 'TfmdDL', 'ResampledDL', 'ResampledDL']
    n_head = sum(1 for _ in learn.model[1].parameters())
    assert r[2]['trainable'] == r[3]['trainable'] == n_head < r[0]['trainable']
    # the body (weights and BatchNorm statistics) did not move in the stage; the head did
    assert all(torch.equal(a, b) for a, b in zip(snap['body'], learn.model[0].parameters()))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(snap['bn'], [m for m in learn.model[0].modules() if isinstance(m, nn.BatchNorm2d)]))
    assert not all(torch.equal(a, b) for a, b in zip(snap['head'], learn.model[1].parameters()))
    # stage lr: cosine from the natural stage's largest rate (fit() is constant 1e-2) down towards 0
    stage = r[2]['lrs'] + r[3]['lrs']
    assert np.isclose(stage[0], 1e-2) and stage[-1] < 1e-3 and all(np.diff(stage) <= 1e-12)
    assert [v[-1] for v in learn.recorder.values] == [0, 0, 1, 1]  # the 'stage' column: a number, for fastai's loggers
    assert_restored(learn, dls, n_metrics=1)


def test_reinit_resets_last_linear(dls):
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    lin = last_linear(learn.model[1])
    seen = {}
    class Watch(Callback):
        order = 50
        def before_train(self):
            if self.epoch == 1: seen['w'] = lin.weight.detach().clone()
        def after_train(self):
            if self.epoch == 0: seen['w0'] = lin.weight.detach().clone()
    quiet_fit(learn, 2, cbs=[BalancedFinetune(epochs=1, reinit=True), Watch()])
    assert not torch.equal(seen['w0'], seen['w'])  # changed between the end of epoch 0 and the stage start: re-initialised
    quiet_fit(learn, 2, cbs=[BalancedFinetune(epochs=1), Watch()])
    assert torch.equal(seen['w0'], seen['w'])  # the default keeps the classifier trained on the natural data


@pytest.mark.parametrize('how', ['cancel', 'keyboard', 'error', 'early_stop'])
def test_restored_however_the_fit_ends(dls, how):
    class Stop(Callback):
        order = 50
        def after_batch(self):
            if self.training and self.epoch == 2 and self.iter == 1:
                if how == 'cancel': raise CancelFitException()
                if how == 'keyboard': raise KeyboardInterrupt()
                if how == 'error': raise RuntimeError('boom')
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=accuracy)
    cbs = [BalancedFinetune(epochs=2), Stop()] + ([EarlyStoppingCallback(monitor='valid_loss', patience=0, min_delta=10.)] if how == 'early_stop' else [])
    try: quiet_fit(learn, 4, cbs=cbs)
    except (KeyboardInterrupt, RuntimeError): pass
    assert_restored(learn, dls, n_metrics=1)
    quiet_fit(learn, 1)  # and the learner trains normally afterwards


@pytest.mark.parametrize('cache, stage_dl', [('auto', 'Resampled_FeatureDL'), (False, 'ResampledDL')])
def test_fine_tune_stage_once_at_the_end(dls, cache, stage_dl):
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=BalancedFinetune(epochs=1, cache=cache))
    probe = Probe()
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(2, freeze_epochs=2, cbs=probe)
    assert [o['dl'] for o in probe.rows] == ['TfmdDL', stage_dl]  # the probe sees the last fit: 2 epochs, the last balanced
    assert not getattr(learn, '_imb_warmup', False)


def test_save_model_and_fp16_and_drw(dls, tmp_path):
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=accuracy, path=tmp_path,
                           cbs=[BalancedFinetune(epochs=1, mode='drw'), SaveModelCallback(monitor='accuracy', fname='best')])
    probe = Probe()
    quiet_fit(learn, 2, cbs=probe)
    assert (tmp_path/'models'/'best.pth').exists()
    assert [o['dl'] for o in probe.rows] == ['TfmdDL', 'TfmdDL'] and probe.rows[1]['trainable'] == probe.rows[0]['trainable']
    assert_restored(learn, dls, n_metrics=1)
    try: learn.to_fp16()
    except Exception as e: pytest.skip(f'mixed precision unavailable on this machine: {e}')
    quiet_fit(learn, 2)
    assert_restored(learn, dls, n_metrics=1)


def test_export_and_load_in_a_fresh_process(dls, tmp_path, lt_path):
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=BalancedFinetune(epochs=1))
    quiet_fit(learn, 2)
    learn.export(tmp_path/'export.pkl')
    img = next((lt_path/'valid'/'3').glob('*.png'))
    code = (f"import warnings; warnings.filterwarnings('ignore')\n"
            f"from fastai.vision.all import load_learner\nimport fastai_imbalance.finetune\n"
            f"l = load_learner({str(tmp_path/'export.pkl')!r})\n"
            f"cls, idx, probs = l.predict({str(img)!r})\n"
            f"assert len(probs) == 10 and abs(float(probs.sum()) - 1) < 1e-4\n"
            f"assert any(type(c).__name__ == 'BalancedFinetune' for c in l.cbs)\nprint('predicted', cls)")
    import os
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get('PYTHONPATH', '')]))  # tiny_arch lives in conftest
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'predicted' in out.stdout
    local = load_learner(tmp_path/'export.pkl')
    assert torch.allclose(local.predict(img)[2], learn.predict(img)[2], atol=1e-5)


def test_get_preds_and_validate_do_not_trigger_the_stage(dls):
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=BalancedFinetune(epochs=1))
    learn.get_preds(); learn.validate()
    assert learn.dls.train is dls.train and len(learn.metrics) == 0


@pytest.mark.parametrize('make,msg', [
    (lambda: BalancedFinetune(mode='ldam'), "mode='ldam': use one of ('crt', 'drw', 'tau')"),
    (lambda: BalancedFinetune(train='body'), "train='body'"),
    (lambda: BalancedFinetune(epochs=0), "epochs must be a positive int"),
    (lambda: BalancedFinetune(pct=1.5), "pct must lie in (0, 1)"),
    (lambda: BalancedFinetune(sched='linear'), "sched='linear'"),
])
def test_bad_settings(make, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): make()


def test_bad_settings_at_fit_start(dls):
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    with pytest.warns(UserWarning, match=re.escape('BalancedFinetune(epochs=3) in a fit of 3 epochs: the balanced stage takes the last 2')):
        quiet_fit(learn, 3, cbs=BalancedFinetune(epochs=3))
    assert [v[-1] for v in learn.recorder.values] == [0, 1, 1]
    bare = Learner(dls, nn.Sequential(nn.Conv2d(3, 10, 32), nn.Flatten()), loss_func=CrossEntropyLossFlat())
    with pytest.raises(ValueError, match='no nn.Linear layer'): quiet_fit(bare, 2, cbs=BalancedFinetune(epochs=1))
    assert bare.train_iter == 0  # refused at before_fit, before any step
    with pytest.raises(ValueError, match=re.escape("unknown strategy 'equal'")): quiet_fit(learn, 2, cbs=BalancedFinetune(epochs=1, strategy='equal'))
    assert learn.dls.train is dls.train  # nothing trained, nothing changed


# --- every change put back, the stage where it belongs, fastai's own paths ---

class StageLR(Callback):
    "The optimizer's learning rate (as the torch optimizer holds it, for OptimWrapper) at each training batch, and the weight decay"
    order = 60
    def before_fit(self): self.lrs, self.wds = [], []
    def before_batch(self):
        if not self.training: return
        o = getattr(self.opt, 'opt', None)
        self.lrs.append(o.param_groups[-1]['lr'] if o is not None else self.opt.hypers[-1]['lr'])
        self.wds.append(o.param_groups[-1]['weight_decay'] if o is not None else self.opt.hypers[-1]['wd'])


@pytest.mark.parametrize('wrapped', [False, True])
def test_stage_lr_and_wd_with_fastai_and_torch_optimizers(dls, wrapped):
    from functools import partial
    from fastai.vision.all import OptimWrapper, Adam
    opt_func = partial(OptimWrapper, opt=torch.optim.AdamW) if wrapped else Adam
    learn = vision_learner(dls, tiny_arch, pretrained=False, opt_func=opt_func)
    rec = StageLR()
    n_iter = len(dls.train)
    quiet_fit(learn, 4, lr=1e-2, cbs=[BalancedFinetune(epochs=2, wd=.5), rec])
    stage = rec.lrs[2 * n_iter:]
    assert np.isclose(stage[0], 1e-2, rtol=1e-6) and stage[-1] < 1e-3  # the stage starts at the fit's largest rate, as the optimizer sees it
    assert all(np.isclose(w, .5) for w in rec.wds[2 * n_iter:]) and not np.isclose(rec.wds[0], .5)
    wd0 = rec.wds[0]
    quiet_fit(learn, 1, cbs=rec)  # a later plain fit: weight decay is the optimizer's own again
    assert all(np.isclose(w, wd0) for w in rec.wds)


def test_drw_with_train_head_trains_only_the_head(dls):
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    probe = Probe()
    quiet_fit(learn, 2, cbs=[BalancedFinetune(epochs=1, mode='drw', train='head'), probe])
    n_head = sum(1 for _ in learn.model[1].parameters())
    assert probe.rows[1]['trainable'] == n_head < probe.rows[0]['trainable'] and probe.rows[1]['dl'] == 'TfmdDL'
    assert probe.rows[1]['loss'] == 'CrossEntropyLossFlat' and probe.rows[0]['loss'] == 'CrossEntropyLossFlat'
    assert_restored(learn, dls)


def test_classifier_trains_the_last_linear_layer_head_the_whole_head(dls):
    for train in ('classifier', 'head'):
        learn = vision_learner(dls, tiny_arch, pretrained=False)
        probe = Probe()
        quiet_fit(learn, 2, cbs=[BalancedFinetune(epochs=1, train=train), probe])
        lin = last_linear(learn.model[1])  # fastai's head ends in a Linear without bias
        n = len(list(lin.parameters())) if train == 'classifier' else len(list(learn.model[1].parameters()))
        assert probe.rows[1]['trainable'] == n < probe.rows[0]['trainable']
        assert_restored(learn, dls)


def test_validate_inside_the_fit_sets_up_once(dls):
    class Val(Callback):
        "A user callback that validates at the end of each epoch (validate() sends after_epoch itself: call it once)"
        order, busy = 70, False
        def after_epoch(self):
            if self.busy: return
            self.busy = True
            try: self.learn.validate()
            finally: self.busy = False
    class Weighted(Callback):
        "Whether each epoch trains with a class-weighted loss (rows kept across the before_fit that validate() sends)"
        order, rows = 60, []
        def before_train(self): self.rows.append(getattr(self.learn.loss_func.func, 'weight', None) is not None)
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=accuracy)
    quiet_fit(learn, 3, cbs=[BalancedFinetune(epochs=1, mode='drw'), Val(), Weighted()])
    assert learn.recorder.metric_names.filter(lambda n: n == 'stage').__len__() == 1
    assert Weighted.rows == [False, False, True]  # DRW's weighted loss in the last epoch only
    assert_restored(learn, dls, n_metrics=1)


@pytest.mark.parametrize('how', ['fit', 'fit_one_cycle', 'fine_tune'])
def test_one_epoch_fits_work_with_a_warning(dls, how):
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=BalancedFinetune())
    with pytest.warns(UserWarning, match='leaves no room for the balanced stage'), learn.no_bar(), learn.no_logging():
        getattr(learn, how)(1)
    assert learn.dls.train is dls.train and learn.trained_prior.how == 'the training labels'


def test_early_stopping_before_the_stage_warns(dls):
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    es = EarlyStoppingCallback(monitor='valid_loss', patience=0, min_delta=100.)
    with pytest.warns(UserWarning, match=re.escape('ended after epoch 1 (fastai counts from 0), before the balanced stage (epochs 3 to 3)') + '.*EarlyStoppingCallback stopped it'):
        quiet_fit(learn, 4, cbs=[BalancedFinetune(epochs=1), es])
    assert len(learn.recorder.values) == 2  # epochs 0 and 1, as fastai numbers them and learn.trained_prior.how == 'the training labels'


def test_save_model_reloading_pre_stage_weights_warns_and_records_their_prior(dls, tmp_path):
    from fastai.vision.all import ValueMetric
    learn = vision_learner(dls, tiny_arch, pretrained=False, path=tmp_path)
    learn.metrics = [ValueMetric(lambda: -float(learn.epoch), 'neg_epoch')]  # best at epoch 0 (fastai's numbering): before the stage
    with pytest.warns(UserWarning, match=re.escape('reloads the weights of epoch 0 (fastai counts from 0, as its table does), from before the balanced stage (epochs 2 to 2)')):
        quiet_fit(learn, 3, cbs=[BalancedFinetune(epochs=1), SaveModelCallback(monitor='neg_epoch', comp=np.greater)])
    assert learn.trained_prior.how == 'the training labels'  # the reloaded weights' prior, not the stage's
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        quiet_fit(learn, 3, cbs=[BalancedFinetune(epochs=1), SaveModelCallback(monitor='neg_epoch', comp=np.greater, at_end=True)])
    assert 'ResampledDL' in learn.trained_prior.how


def test_stage_column_works_with_fastai_loggers(dls, tmp_path):
    from fastai.vision.all import CSVLogger
    import pandas as pd
    class Scalars(Callback):
        "What TensorBoardCallback does with each metric: add_scalar, which needs a number"
        order = 90  # after Recorder
        def before_fit(self): self.seen = []
        def after_epoch(self):
            for n, v in zip(self.recorder.metric_names[2:-1], self.recorder.log[2:-1]): self.seen.append((n, float(torch.as_tensor(v))))
    learn = vision_learner(dls, tiny_arch, pretrained=False, path=tmp_path, metrics=accuracy)
    sc = Scalars()
    with learn.no_bar(): learn.fit(3, cbs=[BalancedFinetune(epochs=1), CSVLogger(), sc])
    df = pd.read_csv(tmp_path/'history.csv')
    assert df['stage'].tolist() == [0, 0, 1] and df['stage'].dtype.kind in 'iuf'
    assert [v for n, v in sc.seen if n == 'stage'] == [0., 0., 1.]


def test_each_fit_is_its_own_crt(dls):
    "Documented: with reinit=True (Kang et al.'s cRT) each fit re-initialises the classifier at its stage; the default, reinit=False, keeps it"
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    lin = last_linear(learn.model[1])
    quiet_fit(learn, 2, cbs=BalancedFinetune(epochs=1, reinit=False))
    w = lin.weight.detach().clone()
    class Snap(Callback):
        order = 60
        def before_train(self):
            if self.epoch == 1: self.w = lin.weight.detach().clone()
        def after_train(self):
            if self.epoch == 0: self.w0 = lin.weight.detach().clone()
    s = Snap()
    quiet_fit(learn, 2, cbs=[BalancedFinetune(epochs=1, reinit=False), s])
    assert torch.equal(s.w0, s.w)  # no re-initialisation at the stage
    assert not torch.equal(w, s.w0)  # and the second fit trained on from the first
    for _ in range(2):  # cRT: every fit re-initialises at its own stage, and puts back what it changed
        s = Snap()
        quiet_fit(learn, 2, cbs=[BalancedFinetune(epochs=1, reinit=True), s])
        assert not torch.equal(s.w0, s.w)
        assert_restored(learn, dls)


@pytest.mark.parametrize('cache, stage_dl', [('auto', 'Resampled_FeatureDL'), (False, 'ResampledDL')])
def test_num_workers_fit_and_inference(lt_path, cache, stage_dl):
    "Worker processes load the natural epochs, the cache's pass and (uncached) the stage's images"
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=2)
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=BalancedFinetune(epochs=1, cache=cache))
    probe = Probe()
    quiet_fit(learn, 2, cbs=probe)
    assert [o['dl'] for o in probe.rows] == ['TfmdDL', stage_dl] and learn.dls.train is dls.train
    with learn.no_bar(): p, y = learn.get_preds(ds_idx=0)
    assert len(p) == len(dls.train_ds) and sorted(y.tolist()) == sorted(int(dls.vocab.o2i[o.parent.name]) for o in dls.train.items)


def test_timm_architecture_by_name(dls, tmp_path):
    "vision_learner(dls, '<timm name>'): fastai builds a TimmBody and its own head; the stage finds, trains and restores it; PriorShift and export work"
    pytest.importorskip('timm')
    from fastai_imbalance.priorshift import PriorShift
    learn = vision_learner(dls, 'resnet10t', pretrained=False, cbs=BalancedFinetune(epochs=1, cache=False))
    probe = Probe()
    body0 = [p.detach().clone() for p in learn.model[0].parameters()]
    class Snap(Callback):
        order = 60
        def before_train(self):
            if self.epoch == 1: self.body = [p.detach().clone() for p in self.model[0].parameters()]
    s = Snap()
    quiet_fit(learn, 2, cbs=[probe, s])
    assert probe.rows[1]['trainable'] == sum(1 for _ in learn.model[1].parameters()) and probe.rows[1]['dl'] == 'ResampledDL'
    assert all(torch.equal(a, b) for a, b in zip(s.body, learn.model[0].parameters()))  # the body did not move in the stage
    assert not all(torch.equal(a, b) for a, b in zip(body0, learn.model[0].parameters()))  # it trained before it
    assert_restored(learn, dls)
    torch.testing.assert_close(learn.trained_prior.priors, torch.full((10,), .1, dtype=torch.float64))
    learn.add_cb(PriorShift('uniform'))
    learn.export(tmp_path/'timm.pkl')
    img = dls.valid.items[0]
    assert torch.allclose(load_learner(tmp_path/'timm.pkl').predict(img)[2], learn.predict(img)[2], atol=1e-5)


def test_timm_architecture_with_the_default_stage(dls):
    "The default on a timm body: the cached classifier stage (fastai's head ends in its linear layer), the whole model back after the fit"
    pytest.importorskip('timm')
    learn = vision_learner(dls, 'resnet10t', pretrained=False, cbs=(bf := BalancedFinetune(epochs=1)))
    full,spy = learn.model,CacheSpy()
    quiet_fit(learn, 2, cbs=spy)
    assert bf._cache is True and spy.trained is last_linear(full) and learn.model is full
    assert_restored(learn, dls)
    torch.testing.assert_close(learn.trained_prior.priors, torch.full((10,), .1, dtype=torch.float64))


def test_stage_after_lr_find_and_load(dls, tmp_path):
    "lr_find and load rebuild fastai's optimizer state as a plain dict: the stage's fresh classifier state must not need a defaultdict"
    learn = vision_learner(dls, tiny_arch, pretrained=False, path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.lr_find(num_it=5, show_plot=False)
    quiet_fit(learn, 2, cbs=BalancedFinetune(epochs=1, reinit=True))  # the fresh classifier's state is what lr_find and load rebuilt
    assert 'ResampledDL' in learn.trained_prior.how
    learn.save('a'); learn.load('a')
    quiet_fit(learn, 2, cbs=BalancedFinetune(epochs=1, reinit=True))
    assert_restored(learn, dls)


def test_cancelled_before_any_epoch_says_nothing(dls):
    class Cancel(Callback):
        order = 50  # after BalancedFinetune's before_fit (45) has set up
        def before_fit(self): raise CancelFitException()
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        quiet_fit(learn, 3, cbs=[BalancedFinetune(epochs=1), Cancel()])
    assert_restored(learn, dls)


def test_fresh_classifier_state_with_torch_and_lookahead_optimizers(dls):
    "The re-initialised layer starts with no optimizer state: PyTorch's inside OptimWrapper, and ranger's Lookahead copy of the weights"
    from functools import partial
    from fastai.vision.all import OptimWrapper, ranger
    for opt_func in (partial(OptimWrapper, opt=torch.optim.AdamW), ranger):
        learn = vision_learner(dls, tiny_arch, pretrained=False, opt_func=opt_func)
        lin = last_linear(learn.model[1])
        seen = {}
        class Look(Callback):
            order = 60
            def before_train(self):
                if self.epoch != 1: return
                o = self.opt.opt if isinstance(self.opt, OptimWrapper) else self.opt
                seen['state'] = dict(o.state[lin.weight]) if lin.weight in o.state else {}
                seen['slow'] = getattr(self.opt, 'slow_weights', None)
        quiet_fit(learn, 2, cbs=[BalancedFinetune(epochs=1, reinit=True), Look()])
        assert seen['state'] == {} and seen['slow'] is None, opt_func
        assert_restored(learn, dls)


def test_distributed_trainer_putting_loaders_back_keeps_the_stage_prior(dls):
    "fastai's DistributedTrainer restores the loaders it saw at before_fit in its after_fit, before the fit ends: the stage's prior must survive it"
    class PutBack(Callback):
        order = 11  # as DistributedTrainer
        def before_fit(self): self.old = self.dls.loaders
        def after_fit(self): self.learn.dls.loaders = self.old
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    quiet_fit(learn, 2, cbs=[BalancedFinetune(epochs=1), PutBack()])
    torch.testing.assert_close(learn.trained_prior.priors, torch.full((10,), .1, dtype=torch.float64))


# --- the cached stage: the classifier retrained on its inputs, computed once ---

class CacheSpy(Callback):
    "At the first cached epoch: the cache's tensors, the model the batches go through, and the weights before the stage trains"
    order = BalancedFinetune.order + 1
    def before_train(self):
        if self.epoch == self.n_epoch - 1:
            self.feats,self.targets = self.learn.dl.dataset.tensors  # not self.x: fastai warns of shadowing learn.x
            self.trained = self.learn.model
            self.w = {n: p.detach().clone() for n,p in self._full().named_parameters()}
    def _full(self): return next(cb for cb in self.learn.cbs if isinstance(cb, BalancedFinetune))._full


def _classifier_inputs(model, dl, split_idx):
    "The last linear layer's inputs on every item of `dl`, in order, in eval mode, with the transforms of split `split_idx`"
    got = []
    h = last_linear(model).register_forward_hook(lambda m, i, o: got.append(i[0].detach().float()))
    model.eval()
    try:
        with dl.dataset.set_split_idx(split_idx), torch.no_grad():
            for b in dl: model(b[0])
    finally: h.remove()
    return torch.cat(got)


def test_cache_equals_a_fresh_forward_pass_without_augmentation(lt_path):
    from fastai.vision.all import aug_transforms
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0, batch_tfms=aug_transforms(max_rotate=20, size=24))
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    spy = CacheSpy()
    quiet_fit(learn, 2, lr=1e-2, cbs=[BalancedFinetune(epochs=1, train='classifier', cache=True), spy])
    assert spy.trained is last_linear(learn.model)  # the stage's batches went through the classifier alone
    body = {n: p for n,p in learn.model.named_parameters()}
    assert all(torch.equal(spy.w[n], body[n]) for n in spy.w if not n.startswith('1.8.')) and not torch.equal(spy.w['1.8.weight'], body['1.8.weight'])
    for n,p in learn.model.named_parameters(): p.data.copy_(spy.w[n])  # the weights the cache was computed with
    plain = dls.train.new(shuffle=False, drop_last=False)
    fresh = _classifier_inputs(learn.model, plain, 1)
    assert spy.feats.dtype == torch.float16 and spy.feats.shape == fresh.shape == (len(dls.train_ds), 512)
    torch.testing.assert_close(spy.feats.float(), fresh.half().float(), rtol=0, atol=0)
    assert torch.equal(spy.targets, torch.tensor([int(t) for _,t in dls.train_ds]))
    augmented = _classifier_inputs(learn.model, plain, 0)  # the training transforms would have changed them
    assert (augmented - fresh).abs().max() > 1e-2


def test_cached_stage_restores_everything_however_it_ends(dls):
    Stop = lambda: RaiseAt(2, 1, KeyboardInterrupt)
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=accuracy)
    full = learn.model
    try: quiet_fit(learn, 3, cbs=[BalancedFinetune(epochs=1, train='classifier', cache=True), Stop()])
    except KeyboardInterrupt: pass
    assert learn.model is full and not any(m._forward_hooks for m in full.modules())
    assert_restored(learn, dls, n_metrics=1)
    quiet_fit(learn, 3, cbs=BalancedFinetune(epochs=1, train='classifier', cache=True))  # and again, to the end
    assert learn.model is full and not any(m._forward_hooks for m in full.modules())
    assert_restored(learn, dls, n_metrics=1)
    assert torch.allclose(learn.trained_prior.priors, torch.full((10,), 0.1, dtype=torch.float64))
    assert [v[-1] for v in learn.recorder.values] == [0, 0, 1]


@pytest.mark.parametrize('make, msg', [
    (lambda: BalancedFinetune(cache=True, train='head'), "cache=True retrains the classifier alone on its cached inputs: it needs mode='crt' and train='classifier' (or 'scales'), got mode='crt', train='head'"),
    (lambda: BalancedFinetune(cache=True, mode='drw', train='classifier'), "got mode='drw', train='classifier'"),
])
def test_cache_needs_the_classifier_alone(make, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): make()


def test_cache_refuses_what_it_cannot_do_before_the_first_step(dls):
    from fastai.callback.mixup import CutMix
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    w = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.raises(ValueError, match=re.escape("with CutMix: the stage's batches are the classifier's inputs")):
        quiet_fit(learn, 2, cbs=[BalancedFinetune(epochs=1, train='classifier', cache=True), CutMix()])
    body = nn.Sequential(tiny_arch(), nn.Flatten())
    for tail,why in ((nn.Sequential(nn.Linear(64, 10), nn.Sigmoid()), "something follows it in the model"),
                     (nn.Sequential(nn.Unflatten(1, (64, 1, 1)), nn.Conv2d(64, 10, 1), nn.Flatten()), "its inputs have 4 dimensions, not (batch, features)")):
        odd = Learner(dls, nn.Sequential(body, tail), loss_func=CrossEntropyLossFlat())
        before = [p.detach().clone() for p in odd.model.parameters()]
        with pytest.raises(ValueError, match=re.escape(why) + ".*use cache=False"):
            quiet_fit(odd, 2, cbs=BalancedFinetune(epochs=1, train='classifier', cache=True))
        assert all(torch.equal(a, b) for a,b in zip(before, odd.model.parameters())) and not any(m._forward_hooks for m in odd.model.modules())
    assert all(torch.equal(a, b) for a,b in zip(w, learn.model.parameters()))


def _steps():
    "Training steps of each epoch, counted at after_step"
    class Steps(Callback):
        order = 99
        def before_fit(self): self.n = []
        def before_train(self): self.n.append(0)
        def after_step(self): self.n[-1] += 1
    return Steps()


def test_cached_stage_survives_a_cancelled_epoch_and_saves_the_whole_model(dls, tmp_path):
    "CancelEpochException skips fastai's after_train: the whole model is back for the next epoch, for SaveModelCallback, and after the fit"
    from fastai.callback.core import CancelEpochException
    class SkipRest(Callback):
        order = 50
        def after_batch(self):
            if self.training and self.epoch >= 2 and self.iter == 1: raise CancelEpochException()
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=accuracy, path=tmp_path)
    full = learn.model
    quiet_fit(learn, 4, cbs=[BalancedFinetune(epochs=2, train='classifier', cache=True), SkipRest(), SaveModelCallback(every_epoch=True, fname='e')])
    assert learn.model is full and learn.dls.train is dls.train and all(p.requires_grad for p in full.parameters())
    assert set(torch.load(tmp_path/'models'/'e_3.pth')) == set(full.state_dict())


@pytest.mark.parametrize('when', ['after_batch', 'after_train'])
def test_validate_and_get_preds_inside_a_cached_epoch_use_the_whole_model(dls, when):
    "A callback (ordered before BalancedFinetune) that validates inside a cached epoch's training: the whole model scores, the stage trains on"
    class V(Callback):
        def __init__(self): self.v = []  # not before_fit: validate() inside a fit sends before_fit again
        def _check(self):
            if self.epoch == self.n_epoch - 1 and not self.v:
                self.v.append(self.learn.validate()); self.learn.get_preds()
    setattr(V, when, lambda self: self._check() if (when == 'after_train' or (self.training and self.iter == 1)) else None)
    class W(Callback):  # the classifier's weights when the stage starts (once: validate() sends before_epoch again)
        order = BalancedFinetune.order + 1
        def before_epoch(self):
            if self.epoch == self.n_epoch - 1 and 'snap' not in self.__dict__: self.snap = last_linear(self.model).weight.detach().clone()
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=accuracy)
    full,v,w = learn.model,V(),W()
    quiet_fit(learn, 3, cbs=[BalancedFinetune(epochs=1, train='classifier', cache=True), v, w])
    assert len(v.v) == 1 and np.isfinite(v.v[0][0])
    assert learn.model is full and not torch.equal(w.snap, last_linear(full).weight)  # the stage trained on after the inner validation


def test_cache_refuses_mixing_callbacks_tuple_outputs_and_refuses_before_fine_tunes_warm_up(dls):
    from fastai.callback.mixup import MixUp, CutMix
    class MyCutMix(CutMix): pass
    for cb in (MixUp(), MyCutMix()):
        learn = vision_learner(dls, tiny_arch, pretrained=False)
        with pytest.raises(ValueError, match=re.escape(f"with {type(cb).__name__}: the stage's batches are the classifier's inputs")):
            quiet_fit(learn, 2, cbs=[BalancedFinetune(epochs=1, train='classifier', cache=True), cb])
        assert learn.train_iter == 0
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=[BalancedFinetune(epochs=1, train='classifier', cache=True), MixUp()])
    with learn.no_bar(), learn.no_logging(), pytest.raises(ValueError, match="with MixUp"): learn.fine_tune(2)
    assert learn.train_iter == 0  # refused before the frozen warm-up epoch trained
    class Twice(nn.Module):
        def __init__(self): super().__init__(); self.body, self.lin = nn.Sequential(tiny_arch(), nn.Flatten()), nn.Linear(64, 10)
        def forward(self, x): o = self.lin(self.body(x)); return o, o
    two = Learner(dls, Twice(), loss_func=lambda o, y: CrossEntropyLossFlat()(o[0], y))
    with pytest.raises(ValueError, match=re.escape("the model returns a tuple: use cache=False")):
        quiet_fit(two, 2, cbs=BalancedFinetune(epochs=1, train='classifier', cache=True))


def test_cache_keeps_large_features_in_float32_and_the_loaders_drop_last():
    "Inputs beyond float16's range are kept in float32 (the stage's loss stays finite); the cached stage steps as many batches as the live one"
    from torch.utils.data import TensorDataset
    from fastai.data.core import DataLoaders
    set_seed(0)
    x = torch.randn(250, 4) * 1e5; y = (x[:, 0] > 0).long() + (x[:, 1] > 1e5).long()
    for drop_last in (False, True):
        steps = {}
        for cache in (False, True):
            dls = DataLoaders.from_dsets(TensorDataset(x[:200], y[:200]), TensorDataset(x[200:], y[200:]), bs=32, drop_last=drop_last)
            learn = Learner(dls, nn.Sequential(nn.Linear(4, 3)), loss_func=CrossEntropyLossFlat())
            s = _steps()
            quiet_fit(learn, 3, lr=1e-3, cbs=[BalancedFinetune(epochs=1, train='classifier', cache=cache, n=None, bs=32), s])  # the uncached stage's draws
            assert all(np.isfinite(v[0]) and np.isfinite(v[1]) for v in learn.recorder.values) and torch.isfinite(learn.model[0].weight).all()
            steps[cache] = s.n
        assert steps[True] == steps[False], (drop_last, steps)


def test_an_interrupted_cached_fit_keeps_no_reference_to_the_cache(dls):
    Stop = lambda: RaiseAt(2, 1, KeyboardInterrupt)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    try: quiet_fit(learn, 3, cbs=[BalancedFinetune(epochs=1, train='classifier', cache=True), Stop()])
    except KeyboardInterrupt: pass
    assert learn.dl is None and learn.xb == (None,) and type(learn.dls.train) is TfmdDL  # as fastai's own cleanup leaves a learner


# --- the default, cache='auto': the cached classifier stage where a cache can work, the head through the body where not ---

def test_default_retrains_the_classifier_on_ten_passes_of_cached_inputs_in_triple_batches(dls):
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=(bf := BalancedFinetune()))
    spy,steps = CacheSpy(),_steps()
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='BalancedFinetune')  # nothing to warn about
        quiet_fit(learn, 4, lr=1e-2, cbs=[spy, steps])
    n = len(dls.train_ds)
    assert (bf._cache, bf.train_what) == (True, 'classifier') and spy.trained is last_linear(learn.model)
    assert spy.feats.shape == (n, 512) and steps.n[-1] == 10 * n // (3 * dls.train.bs)  # ten passes of draws, batches of 96, the last partial one dropped
    body = dict(learn.model.named_parameters())
    assert all(torch.equal(spy.w[k], body[k]) for k in spy.w if not k.startswith('1.8.')) and not torch.equal(spy.w['1.8.weight'], body['1.8.weight'])
    assert_restored(learn, dls)
    assert torch.allclose(learn.trained_prior.priors, torch.full((10,), 0.1, dtype=torch.float64))


def test_default_draws_can_be_set(dls):
    "`n` and `bs` given replace the cached stage's ten passes in triple batches"
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    steps = _steps()
    quiet_fit(learn, 2, cbs=[BalancedFinetune(epochs=1, n=64, bs=16), steps])
    assert steps.n[-1] == 4


@pytest.mark.parametrize('mix', ['MixUp', 'CutMix'])
def test_default_falls_back_to_the_head_through_the_body_with_mixing_callbacks_and_caches_again_without(dls, mix):
    from fastai.callback import mixup
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=(bf := BalancedFinetune()))
    probe,n_head = Probe(),sum(1 for _ in learn.model[1].parameters())
    with pytest.warns(UserWarning, match=re.escape(f"BalancedFinetune(cache='auto'): {mix} mixes the training batches, and a cache holds the classifier's inputs, not the items to mix, "
                                                   "so this fit's stage retrains fastai's head on balanced batches of the training items, without a cache")):
        quiet_fit(learn, 3, cbs=[getattr(mixup, mix)(), probe])
    assert (bf._cache, bf.train_what) == (False, 'head') and bf._feat_dl is None
    assert [r['dl'] for r in probe.rows] == ['TfmdDL', 'TfmdDL', 'ResampledDL'] and probe.rows[-1]['trainable'] == n_head
    spy = CacheSpy()
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='BalancedFinetune')
        quiet_fit(learn, 2, cbs=spy)  # the next fit, without the mixing callback: cached again
    assert (bf._cache, bf.train_what) == (True, 'classifier') and spy.trained is last_linear(learn.model)
    assert_restored(learn, dls)


def test_default_falls_back_when_the_model_does_not_end_in_its_classifier(dls):
    "Found at the fit's first batch, before its first step: that fit's stage runs uncached; an explicit cache=True refuses it (above)"
    body = nn.Sequential(tiny_arch(), nn.Flatten())
    odd = Learner(dls, nn.Sequential(body, nn.Sequential(nn.Linear(64, 10), nn.Sigmoid())), loss_func=CrossEntropyLossFlat())
    bf,probe = BalancedFinetune(epochs=1),Probe()
    before = {k: v.detach().clone() for k,v in odd.model.state_dict().items()}
    with pytest.warns(UserWarning, match=re.escape("BalancedFinetune(cache='auto'): the model's output is not its last linear layer's (something follows it in the model), "
                                                   "so this fit's stage retrains fastai's head on balanced batches")):
        quiet_fit(odd, 2, lr=1e-2, cbs=[bf, probe])
    assert bf._cache is False and probe.rows[-1]['dl'] == 'ResampledDL' and probe.rows[-1]['trainable'] == 2  # the final block: its weight and bias
    after = odd.model.state_dict()
    assert not torch.equal(before['1.0.weight'], after['1.0.weight']) and not any(m._forward_hooks for m in odd.model.modules())


@pytest.mark.parametrize('kw, cache, train', [(dict(), 'auto', None), (dict(cache=False), False, 'head'), (dict(cache=True), True, 'classifier'),
                                              (dict(train='head'), False, 'head'), (dict(train='scales'), 'auto', 'scales'), (dict(mode='drw'), False, 'all'),
                                              (dict(mode='tau'), False, 'classifier'), (dict(train='all'), False, 'all')])
def test_what_the_default_cache_becomes_for_each_setting(kw, cache, train):
    "cache='auto' stays 'auto' only where a cache could serve (decided per fit); train=None follows the cache in cRT"
    bf = BalancedFinetune(**kw)
    assert (bf.cache, bf._train) == (cache, train)


# --- cache='last_epoch': the classifier's inputs as the last natural epoch's training computed them ---

class TrainInputs(Callback):
    "The inputs of the dropout in front of the classifier (fastai's head ends in Dropout, Linear) and the targets of every training batch of epoch `at`, as an independent hook sees them"
    order = BalancedFinetune.order + 1
    def __init__(self, at): self.at,self.x,self.y,self.h = at,[],[],None
    def before_train(self):
        if self.epoch == self.at and self.h is None:
            head = self.model[1]
            assert isinstance(head[-2], nn.Dropout) and head[-1] is last_linear(self.model)
            self.h = head[-2].register_forward_hook(lambda m, i, o: self.x.append(i[0].detach().float().cpu()) if m.training else None)
    def after_pred(self):
        if self.h is not None and self.training: self.y.append(self.yb[0].cpu())
    def after_train(self):
        if self.h is not None: self.h.remove(); self.h = None  # not by epoch: a get_preds inside the fit sets learn.epoch to 0


def test_last_epoch_cache_is_the_last_natural_epochs_training_inputs(dls):
    "No extra pass: the stage draws from exactly the classifier's inputs (before its dropout) and targets of the last natural epoch's training batches (a get_preds inside that epoch is not kept)"
    class InnerPreds(Callback):  # before BalancedFinetune's after_train: the recording hook is still on (mid-batch, fastai would stop training the epoch)
        def after_train(self):
            if self.epoch == 1 and not hasattr(self, 'done'): self.done = True; self.learn.get_preds()
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=accuracy)
    full = learn.model
    spy,seen = CacheSpy(),TrainInputs(at=1)
    passes = []
    class Count(Callback):  # forward passes of the whole model outside the training batches
        order = BalancedFinetune.order + 1
        def before_epoch(self):
            if self.epoch == 2: self.h = full[0].register_forward_hook(lambda *a: passes.append(1))
        def before_train(self):
            if self.epoch == 2: self.h.remove()
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message=".*cache='last_epoch'")  # no fallback warning
        quiet_fit(learn, 3, lr=1e-2, cbs=[BalancedFinetune(epochs=1, train='classifier', cache='last_epoch'), InnerPreds(), spy, seen, Count()])
    assert not passes  # nothing ran the body between the last natural epoch and the stage's training
    x,y = torch.cat(seen.x),torch.cat(seen.y)
    assert x.shape == (len(dls.train) * dls.train.bs if dls.train.drop_last else len(dls.train_ds), 512) == spy.feats.shape
    torch.testing.assert_close(spy.feats.float(), x.half().float(), rtol=0, atol=0)
    assert torch.equal(spy.targets, y) and spy.trained is last_linear(full)
    assert learn.model is full and not any(m._forward_hooks for m in full.modules())
    assert_restored(learn, dls, n_metrics=1)
    assert [v[-1] for v in learn.recorder.values] == [0, 0, 1]


def test_last_epoch_cache_falls_back_to_one_pass_when_that_epoch_was_cut_short(dls):
    from fastai.callback.core import CancelEpochException
    Cut = lambda: RaiseAt(1, 1, CancelEpochException)
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    spy = CacheSpy()
    with pytest.warns(UserWarning, match=re.escape("the classifier's inputs of epoch 1 (fastai counts from 0) cannot be used, its training phase did not run, or not to its end: the cache is computed in one pass")):
        quiet_fit(learn, 3, cbs=[BalancedFinetune(epochs=1, train='classifier', cache='last_epoch'), Cut(), spy])
    assert spy.feats.shape == (len(dls.train_ds), 512)  # the one pass: every item once, drop_last or not
    assert not any(m._forward_hooks for m in learn.model.modules())
    assert_restored(learn, dls)


def test_last_epoch_cache_restores_everything_when_the_fit_stops_while_it_records(dls):
    Stop = lambda: RaiseAt(1, 2, KeyboardInterrupt)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    bf = BalancedFinetune(epochs=1, train='classifier', cache='last_epoch')
    try: quiet_fit(learn, 3, cbs=[bf, Stop()])
    except KeyboardInterrupt: pass
    assert not any(m._forward_hooks for m in learn.model.modules()) and bf._rec is None and bf._last_in is None
    assert_restored(learn, dls)
    quiet_fit(learn, 3, cbs=bf)  # the same callback again, to the end
    assert not any(m._forward_hooks for m in learn.model.modules()) and bf._rec is None
    assert_restored(learn, dls)


@pytest.mark.parametrize('bad', ['yes', 'True', 1.0, 2])
def test_cache_values_are_named_when_refused(bad):
    with pytest.raises(ValueError, match=re.escape(f"cache={bad!r}: use False, True (one pass at the stage's start), 'last_epoch' (the last natural epoch's inputs) or 'auto'")):
        BalancedFinetune(train='classifier', cache=bad)


# --- mode='tau': the classifier τ-normalised at the end of the fit ---

class ClassifierAt(Callback):
    "The whole model's weights just before BalancedFinetune's after_train of the last epoch (where mode='tau' rescales)"
    order = BalancedFinetune.order - 1
    def after_train(self):
        if self.epoch == self.n_epoch - 1: self.w = {n: p.detach().clone() for n,p in self.model.named_parameters()}


def test_tau_norm_divides_each_class_by_its_norm_with_tau_chosen_on_the_training_items(dls):
    from sklearn.metrics import balanced_accuracy_score
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=accuracy)
    bf,at = BalancedFinetune(mode='tau'),ClassifierAt()
    quiet_fit(learn, 2, lr=1e-2, cbs=[bf, at])
    lin = last_linear(learn.model)
    w0 = at.w['1.8.weight']
    assert lin.bias is None  # fastai's head: BatchNorm before the last linear layer, no bias (tested with one below)
    torch.testing.assert_close(lin.weight, w0 * (w0.norm(dim=1) ** -bf.tau_chosen)[:, None])
    assert all(torch.equal(p, at.w[n]) for n,p in learn.model.named_parameters() if not n.startswith('1.8.'))  # nothing else changed
    # the choice, against scikit-learn on the classifier's inputs computed independently (eval mode, no augmentation, every training item)
    for n,p in learn.model.named_parameters(): p.data.copy_(at.w[n])
    x = _classifier_inputs(learn.model, dls.train.new(shuffle=False, drop_last=False), 1)
    y = torch.tensor([int(t) for _,t in dls.train_ds])
    with torch.no_grad(): z = lin(x)
    ref = {t: balanced_accuracy_score(y, (z * w0.norm(dim=1) ** -t).argmax(1)) for t in bf.taus}
    assert list(bf.tau_scores) == [float(t) for t in bf.taus]
    np.testing.assert_allclose(list(bf.tau_scores.values()), list(ref.values()), rtol=0, atol=1e-6)
    assert bf.tau_chosen == max(ref, key=lambda t: (ref[t], -t)) and len(set(np.round(list(ref.values()), 6))) > 1  # τ matters here
    assert [v[-1] for v in learn.recorder.values] == [0, 1]  # the last epoch's validation scored the rescaled model
    assert_restored(learn, dls, n_metrics=1) and not any(m._forward_hooks for m in learn.model.modules())
    torch.testing.assert_close(learn.trained_prior.priors, torch.full((10,), .1, dtype=torch.float64))
    assert 'τ-normalised' in learn.trained_prior.how


def test_tau_norm_with_a_fixed_tau_reads_no_data_and_a_cut_fit_rescales_nothing(dls):
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    bf,at = BalancedFinetune(mode='tau', tau=1),ClassifierAt()
    quiet_fit(learn, 2, cbs=[bf, at])
    w0 = at.w['1.8.weight']
    torch.testing.assert_close(last_linear(learn.model).weight, w0 / w0.norm(dim=1)[:, None])
    assert bf.tau_chosen == 1 and bf.tau_scores == {}  # a fixed τ: no candidates scored
    Stop = lambda: RaiseAt(1, 1, CancelFitException)
    w = last_linear(learn.model).weight.detach().clone()
    with pytest.warns(UserWarning, match=re.escape("before the classifier's τ-normalisation at the end of epoch 1's training: the model was not τ-normalised")):
        quiet_fit(learn, 2, cbs=[BalancedFinetune(mode='tau', tau=1), Stop()])
    assert not torch.allclose(last_linear(learn.model).weight.norm(dim=1), torch.ones(10))  # trained on, never rescaled
    assert 'τ' not in learn.trained_prior.how
    assert_restored(learn, dls)


@pytest.mark.parametrize('make,msg', [
    (lambda: BalancedFinetune(mode='tau', train='head'), "mode='tau' rescales the trained classifier and trains nothing: leave train, cache and reinit unset, got train='head'"),
    (lambda: BalancedFinetune(mode='tau', cache=True), "got train=None, cache=True"),
    (lambda: BalancedFinetune(mode='tau', reinit=True), "reinit=True"),
    (lambda: BalancedFinetune(mode='tau', tau='1'), "tau must be a number in [0, 10], got '1'"),
    (lambda: BalancedFinetune(mode='tau', tau=-1), "got -1"),
    (lambda: BalancedFinetune(mode='tau', taus=()), "taus must be a non-empty list or tuple of numbers in [0, 10], got ()"),
    (lambda: BalancedFinetune(mode='tau', taus=(0, 20)), "got (0, 20)"),
    (lambda: BalancedFinetune(mode='tau', taus=(t for t in (0, 1))), "taus must be a non-empty list or tuple"),
    (lambda: BalancedFinetune(tau=0.5), "tau=0.5 is the exponent of mode='tau', not of mode='crt': pass mode='tau' too"),
    (lambda: BalancedFinetune(mode='tau', epochs=2, lr=1e-3), "mode='tau' trains no stage, so epochs=2, lr=0.001 would be ignored: leave them unset, or use mode='crt'"),
    (lambda: BalancedFinetune(mode='tau', strategy='sqrt'), "so strategy='sqrt' would be ignored: leave it unset"),
    (lambda: BalancedFinetune(mode='tau', n=100), "so n=100 would be ignored"),
    (lambda: BalancedFinetune(mode='tau2'), "mode='tau2': use one of ('crt', 'drw', 'tau')")])
def test_tau_norm_settings_are_refused_by_name(make, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): make()


def test_tau_norm_refuses_sigmoid_and_tuple_outputs_before_training(dls):
    from fastai.losses import BCEWithLogitsLossFlat
    learn = vision_learner(dls, tiny_arch, pretrained=False, loss_func=BCEWithLogitsLossFlat())
    with pytest.raises(ValueError, match=re.escape("BalancedFinetune(mode='tau') chooses τ by the argmax of single-label softmax scores, but BCEWithLogitsLossFlat gives sigmoid outputs: use mode='crt'")):
        quiet_fit(learn, 2, cbs=BalancedFinetune(mode='tau'))
    assert learn.train_iter == 0
    class Twice(nn.Module):
        def __init__(self): super().__init__(); self.body, self.lin = nn.Sequential(tiny_arch(), nn.Flatten()), nn.Linear(64, 10)
        def forward(self, x): o = self.lin(self.body(x)); return o, o
    two = Learner(dls, Twice(), loss_func=CrossEntropyLossFlat())  # a softmax loss: the probe refuses the tuple at the first batch, before the loss sees it
    with pytest.raises(ValueError, match=re.escape("BalancedFinetune(mode='tau') needs a model whose output is its last linear layer's") + ".*the model returns a tuple: use mode='crt'"):
        quiet_fit(two, 2, cbs=BalancedFinetune(mode='tau'))


def test_tau_norm_scales_the_bias_with_its_class_on_a_tabular_learner():
    "A one-group model with a bias (tabular_learner's last layer): weights and bias of class j both divided by ‖w_j‖^τ, (n, 1) targets read"
    import pandas as pd
    from fastai.tabular.all import TabularDataLoaders, tabular_learner, Categorify, Normalize
    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame({'a': rng.normal(size=n), 'b': rng.normal(size=n)})
    df['y'] = np.where(df.a > 1.2, 'rare', np.where(df.b > 0.3, 'mid', 'common'))
    dls = TabularDataLoaders.from_df(df, y_names='y', cont_names=['a', 'b'], procs=[Normalize], bs=64, valid_idx=list(range(500, n)))
    set_seed(0)
    learn = tabular_learner(dls, layers=[16])
    bf,at = BalancedFinetune(mode='tau', tau=0.5),ClassifierAt()
    quiet_fit(learn, 2, cbs=[bf, at])
    lin = last_linear(learn.model)
    assert lin.bias is not None
    name = next(k for k,p in learn.model.named_parameters() if p is lin.weight)[:-len('weight')]
    s = at.w[name + 'weight'].norm(dim=1) ** -0.5
    torch.testing.assert_close(lin.weight, at.w[name + 'weight'] * s[:, None]); torch.testing.assert_close(lin.bias, at.w[name + 'bias'] * s)
    bf = BalancedFinetune(mode='tau')  # and the choice reads the table's (n, 1) class codes
    quiet_fit(learn, 2, cbs=bf)
    assert bf.tau_chosen in bf.tau_scores and len(bf.tau_scores) == 21


def test_last_epoch_cache_computes_the_cache_when_a_class_missed_the_last_epoch(dls):
    "drop_last left a class's only items out of the last natural epoch: the stage cannot draw it from what was kept, so the one pass runs instead, and says which class"
    class OneClassOut(Callback):  # as drop_last can: the last natural epoch's batches leave out every item of class '9'
        order = BalancedFinetune.order - 1
        def before_batch(self):
            if self.training and self.epoch == 1:
                keep = self.yb[0] != 9
                if keep.all(): return
                self.learn.xb,self.learn.yb = tuple(x[keep] for x in self.xb),tuple(y[keep] for y in self.yb)
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    spy = CacheSpy()
    with pytest.warns(UserWarning, match=re.escape("cannot be used, no item of class ['9'] was in its batches")):
        quiet_fit(learn, 3, cbs=[BalancedFinetune(epochs=1, train='classifier', cache='last_epoch'), OneClassOut(), spy])
    assert spy.feats.shape == (len(dls.train_ds), 512) and (spy.targets == 9).any()
    assert_restored(learn, dls)


# --- train='scales': learnable weight scaling (LWS), one scale per class of the trained classifier ---

class StageStart(Callback):
    "The whole model's weights when the stage starts (after BalancedFinetune's switch)"
    order = BalancedFinetune.order + 1
    def before_epoch(self):
        if self.epoch == self.n_epoch - 1 and not hasattr(self, 'w'): self.w = {n: p.detach().clone() for n,p in self.model.named_parameters()}


@pytest.mark.parametrize('cache', [False, True])
def test_scales_stage_rescales_each_class_of_the_trained_classifier(dls, cache):
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=accuracy)
    at = StageStart()
    quiet_fit(learn, 3, lr=1e-2, cbs=[BalancedFinetune(epochs=1, train='scales', cache=cache), at])
    w0,w = at.w['1.8.weight'],last_linear(learn.model).weight.detach()
    s = (w * w0).sum(1) / (w0 * w0).sum(1)
    torch.testing.assert_close(w, s[:, None] * w0)  # every row a multiple of its pre-stage row
    assert s.std() > 1e-3 and not torch.allclose(s, torch.ones(10))  # the scales learnt, and differ by class
    assert all(torch.equal(p, at.w[n]) for n,p in learn.model.named_parameters() if not n.startswith('1.8.'))
    assert_restored(learn, dls, n_metrics=1) and not any(m._forward_hooks for m in learn.model.modules())
    torch.testing.assert_close(learn.trained_prior.priors, torch.full((10,), .1, dtype=torch.float64))


def test_scales_stage_scales_the_bias_with_its_row_on_a_tabular_learner():
    import pandas as pd
    from fastai.tabular.all import TabularDataLoaders, tabular_learner
    rng = np.random.default_rng(0)
    df = pd.DataFrame({'a': rng.normal(size=600), 'b': rng.normal(size=600)})
    df['y'] = np.where(df.a > 1.2, 'rare', np.where(df.b > 0.3, 'mid', 'common'))
    dls = TabularDataLoaders.from_df(df, y_names='y', cont_names=['a', 'b'], bs=64, valid_idx=list(range(500, 600)))
    set_seed(0)
    learn = tabular_learner(dls, layers=[16])
    at = StageStart()
    quiet_fit(learn, 3, lr=1e-2, cbs=[BalancedFinetune(epochs=1, train='scales'), at])
    lin = last_linear(learn.model)
    name = next(k for k,p in learn.model.named_parameters() if p is lin.weight)[:-len('weight')]
    w0,b0 = at.w[name + 'weight'],at.w[name + 'bias']
    s = ((lin.weight * w0).sum(1) + lin.bias * b0) / ((w0 * w0).sum(1) + b0 * b0)
    torch.testing.assert_close(lin.weight.detach(), s[:, None].detach() * w0); torch.testing.assert_close(lin.bias.detach(), (s * b0).detach())
    assert not torch.allclose(s, torch.ones(3))


def test_scales_cannot_be_reinitialised():
    with pytest.raises(ValueError, match=re.escape("train='scales' rescales the classifier the natural epochs trained: it cannot be re-initialised (reinit=True)")):
        BalancedFinetune(train='scales', reinit=True)


def test_tau_accepts_numpy_numbers():
    assert BalancedFinetune(mode='tau', tau=np.float32(0.5)).tau == 0.5
    assert BalancedFinetune(mode='tau', taus=np.linspace(0, 1, 3)).taus is not None


def test_tau_norm_names_a_loss_it_cannot_read():
    import torch.nn.functional as F
    from fastai.data.core import DataLoaders
    from torch.utils.data import TensorDataset
    x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
    dls = DataLoaders.from_dsets(TensorDataset(x, y), TensorDataset(x, y), bs=16)
    learn = Learner(dls, nn.Sequential(nn.Linear(4, 2)), loss_func=F.cross_entropy)
    with pytest.raises(ValueError, match=re.escape("cannot tell whether cross_entropy gives softmax outputs: use fastai's CrossEntropyLossFlat(), or mode='crt'")):
        quiet_fit(learn, 2, cbs=BalancedFinetune(mode='tau'))


def test_tau_norm_weights_saved_by_save_model_callback_carry_the_uniform_prior(dls, tmp_path):
    "SaveModelCallback saves the τ-normalised last epoch: the prior file beside it, and the prior after its reload, are the uniform one"
    from fastai.callback.tracker import SaveModelCallback
    from fastai_imbalance.training import prior_file
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, path=tmp_path)
    quiet_fit(learn, 2, cbs=[BalancedFinetune(mode='tau', tau=1), SaveModelCallback(every_epoch=True, fname='e')])
    saved = [torch.load(prior_file(tmp_path/'models'/f'e_{i}.pth')) for i in (0, 1)]
    assert 'τ' not in saved[0]['how'] and 'τ-normalised' in saved[1]['how']
    torch.testing.assert_close(saved[1]['priors'], torch.full((10,), .1, dtype=torch.float64))
    class Best(SaveModelCallback):  # "better" at the last epoch whatever the losses: the τ epoch is the one reloaded
        def after_epoch(self):
            self.best = float('inf') if self.epoch < self.n_epoch - 1 else self.best
            super().after_epoch()
    quiet_fit(learn, 2, cbs=[BalancedFinetune(mode='tau', tau=1), Best(fname='best', comp=np.less)])
    assert 'τ-normalised' in learn.trained_prior.how
    torch.testing.assert_close(learn.trained_prior.priors, torch.full((10,), .1, dtype=torch.float64))


@pytest.mark.parametrize('cache', [True, 'last_epoch'])
def test_cached_stage_resumed_at_the_stage_with_start_epoch(dls, cache):
    "fit(start_epoch=) skips the natural epochs: the model check and the cache's eval pass must not mistake each other's forward passes"
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the last-epoch cache says it computes its cache in one pass instead
        quiet_fit(learn, 4, start_epoch=3, cbs=BalancedFinetune(epochs=1, train='classifier', cache=cache))
    assert_restored(learn, dls) and not any(m._forward_hooks for m in learn.model.modules())
