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


def assert_restored(learn, dls, n_metrics=0):
    assert learn.dls.train is dls.train and type(learn.dls.train) is TfmdDL
    assert all(p.requires_grad for p in learn.model.parameters())
    assert len(learn.metrics) == n_metrics and type(learn.loss_func) is CrossEntropyLossFlat
    assert getattr(learn.loss_func.func, 'weight', None) is None


def test_head_stage_trains_only_the_head_with_its_schedule(dls):
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=accuracy, cbs=BalancedFinetune(epochs=2))
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


def test_fine_tune_stage_once_at_the_end(dls):
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=BalancedFinetune(epochs=1))
    probe = Probe()
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(2, freeze_epochs=2, cbs=probe)
    assert [o['dl'] for o in probe.rows] == ['TfmdDL', 'ResampledDL']  # the probe sees the last fit: 2 epochs, the last balanced
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
    (lambda: BalancedFinetune(mode='ldam'), "mode='ldam': use one of ('crt', 'drw')"),
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


# --- issue 15: every change put back, the stage where it belongs, fastai's own paths ---

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


def test_num_workers_fit_and_inference(lt_path):
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=2)
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=BalancedFinetune(epochs=1))
    probe = Probe()
    quiet_fit(learn, 2, cbs=probe)
    assert [o['dl'] for o in probe.rows] == ['TfmdDL', 'ResampledDL'] and learn.dls.train is dls.train
    with learn.no_bar(): p, y = learn.get_preds(ds_idx=0)
    assert len(p) == len(dls.train_ds) and sorted(y.tolist()) == sorted(int(dls.vocab.o2i[o.parent.name]) for o in dls.train.items)


def test_timm_architecture_by_name(dls, tmp_path):
    "vision_learner(dls, '<timm name>'): fastai builds a TimmBody and its own head; the stage finds, trains and restores it; PriorShift and export work"
    pytest.importorskip('timm')
    from fastai_imbalance.priorshift import PriorShift
    learn = vision_learner(dls, 'resnet10t', pretrained=False, cbs=BalancedFinetune(epochs=1))
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
