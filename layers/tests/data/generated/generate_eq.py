#!/usr/bin/env python3
"""New EquilibriumAggregation reference cases, in the fixtures' format, computed by a
pure-Python float64 re-implementation of PyG 2.8.1's layer (standard library only; no
torch, no PyG).

    python3 generate_eq.py OUT_DIR          # write the gen_*.safetensors cases
    python3 generate_eq.py --check FIXTURE...  # re-compute PyG fixtures, print errors

Forward: y0 = 0, m0 = 0; for each inner step g = dE/dy with E = sum_sets mean_{i in set}
F([x_i, y_set]) + softplus(lamb) * mean over all dim_size rows of |y_row|^2, where dE/dy
is computed analytically (hand-written backward of ResNetPotential: Linear, LayerNorm,
Tanh, the raw-input skips); m = sigmoid(_mom) m - softplus(_lr) g; y = y + m.
Loss = sum(out * lossw.out). Gradients of the loss with respect to every parameter and
x: fourth-order central differences of that float64 forward (step 1e-4, independent
of any autodiff; the error, estimated per case from the step-2e-4 estimate, is written
in the case's `note`), i.e. they include every second-order term of the
unrolled inner loop. `--check` runs the same code on the PyG-generated fixtures.
"""
import json
import math
import random
import struct
import sys

# ----------------------------------------------------------------------------- files


def load(path):
    raw = open(path, 'rb').read()
    (n,) = struct.unpack('<Q', raw[:8])
    hdr = json.loads(raw[8:8 + n])
    meta = hdr.pop('__metadata__', {})
    out = {}
    for k, t in hdr.items():
        s, e = t['data_offsets']
        b = raw[8 + n + s:8 + n + e]
        fmt = {'F32': 'f', 'F64': 'd', 'I64': 'q', 'BOOL': '?'}[t['dtype']]
        cnt = len(b) // struct.calcsize(fmt)
        out[k] = (t['shape'], list(struct.unpack('<%d%s' % (cnt, fmt), b)))
    return meta, out


def save(path, tensors, meta):
    """tensors: name -> (dtype, shape, flat values)."""
    header = {'__metadata__': meta}
    blobs = []
    off = 0
    for name in sorted(tensors):
        dtype, shape, vals = tensors[name]
        fmt = {'F32': 'f', 'F64': 'd', 'I64': 'q'}[dtype]
        b = struct.pack('<%d%s' % (len(vals), fmt), *vals)
        header[name] = {'dtype': dtype, 'shape': shape, 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def f32(v):
    return struct.unpack('<f', struct.pack('<f', v))[0]


# ----------------------------------------------------------------------------- model


def softplus(z):
    return math.log1p(math.exp(z)) if z <= 20 else z


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


def param_layout(F, O, hidden):
    """PyG's state_dict keys and shapes, in order."""
    D = F + O
    sizes = [D] + list(hidden) + [1]
    L = len(hidden)
    out = []
    for l in range(L):
        p = 'potential.layers.%d.' % l
        out += [(p + '0.weight', [sizes[l + 1], sizes[l]]), (p + '0.bias', [sizes[l + 1]]),
                (p + '1.weight', [sizes[l + 1]]), (p + '1.bias', [sizes[l + 1]])]
    out += [('potential.layers.%d.weight' % L, [1, sizes[L]]),
            ('potential.layers.%d.bias' % L, [1])]
    for l in range(L + 1):
        out += [('potential.res_trans.%d.weight' % l, [sizes[l + 1], D]),
                ('potential.res_trans.%d.bias' % l, [sizes[l + 1]])]
    out += [('optimizer._lr', [1]), ('optimizer._mom', [1]), ('lamb', [1])]
    return out


def rows(flat, shape):
    if len(shape) == 1:
        return flat
    r, c = shape
    return [flat[i * c:(i + 1) * c] for i in range(r)]


def matvec(W, v):
    return [sum(w * x for w, x in zip(row, v)) for row in W]


def matTvec(W, g):
    out = [0.0] * len(W[0])
    for row, gi in zip(W, g):
        if gi != 0.0:
            for j, w in enumerate(row):
                out[j] += w * gi
    return out


class Model:
    def __init__(self, F, O, hidden, grad_iter, params):
        self.F, self.O, self.hidden, self.grad_iter = F, O, list(hidden), grad_iter
        self.layout = param_layout(F, O, hidden)
        self.params = params  # name -> flat list

    def P(self, k):
        shape = dict(self.layout)[k]
        return rows(self.params[k], shape)

    def dinp(self, inp):
        """d potential(inp) / d inp, analytically (inp = [x, y])."""
        L = len(self.hidden)
        Ws, stash = [], []
        h = inp
        for l in range(L):
            p = 'potential.layers.%d.' % l
            W, b = self.P(p + '0.weight'), self.P(p + '0.bias')
            gam, bet = self.P(p + '1.weight'), self.P(p + '1.bias')
            a = [s + bb for s, bb in zip(matvec(W, h), b)]
            mu = sum(a) / len(a)
            var = sum((v - mu) ** 2 for v in a) / len(a)
            sig = math.sqrt(var + 1e-5)
            ahat = [(v - mu) / sig for v in a]
            t = [math.tanh(v * g + be) for v, g, be in zip(ahat, gam, bet)]
            R, c = self.P('potential.res_trans.%d.weight' % l), self.P('potential.res_trans.%d.bias' % l)
            h = [tt + s + cc for tt, s, cc in zip(t, matvec(R, inp), c)]
            Ws.append(W)
            stash.append((gam, sig, ahat, t))
        # Output layer: h_out = W_L h + b_L + R_L inp + c_L (scalar).
        W_L = self.P('potential.layers.%d.weight' % L)
        R_L = self.P('potential.res_trans.%d.weight' % L)
        g_inp = list(R_L[0])
        g_h = list(W_L[0])
        for l in range(L - 1, -1, -1):
            gam, sig, ahat, t = stash[l]
            R = self.P('potential.res_trans.%d.weight' % l)
            for j, v in enumerate(matTvec(R, g_h)):
                g_inp[j] += v
            g_n = [g * (1 - tt * tt) for g, tt in zip(g_h, t)]
            g_ahat = [g * gm for g, gm in zip(g_n, gam)]
            n = len(g_ahat)
            m1 = sum(g_ahat) / n
            m2 = sum(g * a for g, a in zip(g_ahat, ahat)) / n
            g_a = [(g - m1 - a * m2) / sig for g, a in zip(g_ahat, ahat)]
            g_prev = matTvec(Ws[l], g_a)
            if l == 0:
                for j, v in enumerate(g_prev):
                    g_inp[j] += v
            else:
                g_h = g_prev
        if L == 0:
            for j, v in enumerate(W_L[0]):
                g_inp[j] += v
        return g_inp

    def forward(self, X, index, dim_size):
        F, O = self.F, self.O
        lam = softplus(self.params['lamb'][0])
        lr = softplus(self.params['optimizer._lr'][0])
        mom = sigmoid(self.params['optimizer._mom'][0])
        cnt = [0] * dim_size
        for i in index:
            cnt[i] += 1
        y = [[0.0] * O for _ in range(dim_size)]
        m = [[0.0] * O for _ in range(dim_size)]
        for _ in range(self.grad_iter):
            g = [[2 * lam * v / dim_size for v in row] for row in y]
            for xi, s in zip(X, index):
                d = self.dinp(xi + y[s])
                for o in range(O):
                    g[s][o] += d[F + o] / cnt[s]
            m = [[mom * a - lr * b for a, b in zip(mr, gr)] for mr, gr in zip(m, g)]
            y = [[a + b for a, b in zip(yr, mr)] for yr, mr in zip(y, m)]
        return y


def loss_of(model, X, index, dim_size, w):
    y = model.forward(X, index, dim_size)
    return sum(v * ww for row, wr in zip(y, w) for v, ww in zip(row, wr))


FD_STEP = 1e-4
FD_ERROR = [0.0]  # largest relative difference between the steps h and 2h, per case


def fd(f, h=FD_STEP):
    """Fourth-order central difference of a function of one scalar at 0, with step h.
    Its difference to the step-2h estimate (a bound on the 2h estimate's error, so a
    generous one for this one) is recorded in FD_ERROR."""
    f1, f2, f4 = f(h), f(2 * h), f(4 * h)
    m1, m2, m4 = f(-h), f(-2 * h), f(-4 * h)
    d_h = (-f2 + 8 * f1 - 8 * m1 + m2) / (12 * h)
    d_2h = (-f4 + 8 * f2 - 8 * m2 + m4) / (24 * h)
    FD_ERROR[0] = max(FD_ERROR[0], abs(d_h - d_2h) / max(1.0, abs(d_h)))
    return d_h


def gradients(model, X, index, dim_size, w, only=None):
    """d loss / d every parameter and x, by finite differences. `only`: optional set of
    (name, flat position) to restrict to (for --check)."""
    grads = {}
    for name, shape in model.layout:
        vals = model.params[name]
        g = [0.0] * len(vals)
        for j in range(len(vals)):
            if only is not None and (name, j) not in only:
                continue
            base = vals[j]

            def f(d):
                vals[j] = base + d
                return loss_of(model, X, index, dim_size, w)
            g[j] = fd(f)
            vals[j] = base
        grads[name] = g
    F = model.F
    gx = [0.0] * (len(X) * F)
    for i in range(len(X)):
        for c in range(F):
            if only is not None and ('input.x', i * F + c) not in only:
                continue
            base = X[i][c]

            def f(d):
                X[i][c] = base + d
                return loss_of(model, X, index, dim_size, w)
            gx[i * F + c] = fd(f)
            X[i][c] = base
    grads['input.x'] = gx
    return grads


# ----------------------------------------------------------------------------- cases

CASES = [
    # name, seed, F, O, hidden, grad_iter, lamb arg, layout, dim_size, extras
    dict(name='gen_unsorted_padded', seed=11, F=3, O=2, hidden=[5, 4], grad_iter=3,
         sizes=[4, 0, 5, 1, 3], dim_size=7, shuffle=True),
    dict(name='gen_no_hidden_trained_optim', seed=12, F=2, O=4, hidden=[], grad_iter=6,
         sizes=[3, 5, 4], shuffle=False, lr=-0.3, mom=0.2, lamb=0.7),
    dict(name='gen_sets_of_one', seed=13, F=1, O=1, hidden=[3], grad_iter=2,
         sizes=[1, 1, 1, 1, 1, 1], shuffle=True),
    dict(name='gen_one_set_padded', seed=14, F=5, O=3, hidden=[6], grad_iter=7,
         sizes=None, n=9, dim_size=2),
    dict(name='gen_deep_narrow', seed=15, F=2, O=2, hidden=[3, 3, 3], grad_iter=4,
         sizes=[2, 4, 1, 3], shuffle=True, trained_norm=True),
    dict(name='gen_large_steps', seed=16, F=3, O=3, hidden=[4], grad_iter=5,
         sizes=[6, 4, 5], shuffle=True, x_scale=3.0, lr=1.5, mom=-0.5, lamb=-1.0),
    dict(name='gen_iter1_wide_out', seed=17, F=4, O=6, hidden=[5, 5], grad_iter=1,
         sizes=[3, 2, 4], shuffle=True, dim_size=4),
    dict(name='gen_many_iters', seed=18, F=2, O=3, hidden=[4], grad_iter=12,
         sizes=[5, 2, 0, 4], shuffle=True),
]


def make_case(spec):
    rng = random.Random(spec['seed'])
    F, O, hidden = spec['F'], spec['O'], spec['hidden']
    layout = param_layout(F, O, hidden)
    params = {}
    for name, shape in layout:
        n = 1
        for d in shape:
            n *= d
        if name == 'optimizer._lr':
            v = [spec.get('lr', 0.1)]
        elif name == 'optimizer._mom':
            v = [spec.get('mom', 0.9)]
        elif name == 'lamb':
            v = [spec.get('lamb', 0.1)]
        elif '.1.weight' in name:  # LayerNorm gamma
            v = [1.0 + (rng.uniform(-0.5, 0.5) if spec.get('trained_norm') else 0.0) for _ in range(n)]
        elif '.1.bias' in name:
            v = [rng.uniform(-0.3, 0.3) if spec.get('trained_norm') else 0.0 for _ in range(n)]
        else:
            w_shape = dict(layout)[name.replace('.bias', '.weight')]
            bound = 1 / math.sqrt(w_shape[1])
            v = [rng.uniform(-bound, bound) for _ in range(n)]
        params[name] = [f32(a) for a in v]
    if spec.get('sizes') is None:
        n = spec['n']
        index = None
        idx = [0] * n
        dim_size = spec.get('dim_size', 1)
    else:
        idx = [s for s, k in enumerate(spec['sizes']) for _ in range(k)]
        if spec.get('shuffle'):
            rng.shuffle(idx)
        index = idx
        n = len(idx)
        dim_size = spec.get('dim_size') or (max(idx) + 1)
    scale = spec.get('x_scale', 1.0)
    X = [[f32(rng.uniform(-scale, scale)) for _ in range(F)] for _ in range(n)]
    w = [[f32(rng.uniform(-1, 1)) for _ in range(O)] for _ in range(dim_size)]
    model = Model(F, O, hidden, spec['grad_iter'], params)
    y = model.forward(X, idx, dim_size)
    loss = sum(v * ww for row, wr in zip(y, w) for v, ww in zip(row, wr))
    grads = gradients(model, X, idx, dim_size, w)
    fd_error = FD_ERROR[0]
    FD_ERROR[0] = 0.0
    t = {}
    for name, shape in layout:
        t['param.' + name] = ('F32', shape, params[name])
        t['expect.grad.' + name] = ('F64', shape, grads[name])
    t['input.x'] = ('F32', [n, F], [v for r in X for v in r])
    if index is not None:
        t['input.index'] = ('I64', [n], index)
    t['lossw.out'] = ('F32', [dim_size, O], [v for r in w for v in r])
    t['expect.out'] = ('F64', [dim_size, O], [v for r in y for v in r])
    t['expect.loss'] = ('F64', [1], [loss])
    t['expect.grad.input.x'] = ('F64', [n, F], grads['input.x'])
    fwd = {}
    if spec.get('dim_size') is not None:
        fwd['dim_size'] = dim_size
    meta = {
        'layer': 'EquilibriumAggregation',
        'args': json.dumps({'in_channels': F, 'out_channels': O, 'num_layers': hidden,
                            'grad_iter': spec['grad_iter'], 'lamb': 0.1}),
        'forward': json.dumps(fwd),
        'loss': 'sum(out * lossw.out)',
        'kl_weight': '0.0',
        'note': 'generated by generate_eq.py (pure-Python float64 re-implementation of '
                'PyG 2.8.1, gradients by finite differences with estimated relative error '
                '%.1e), not by PyG' % fd_error,
    }
    return t, meta


def check(path, samples=40):
    """Re-computes a PyG fixture: forward in full, gradients on a random sample."""
    meta, T = load(path)
    args = json.loads(meta['args'])
    fwd = json.loads(meta['forward'])
    F, O, hidden = args['in_channels'], args['out_channels'], args['num_layers']
    params = {k[6:]: list(v[1]) for k, v in T.items() if k.startswith('param.')}
    model = Model(F, O, hidden, args['grad_iter'], params)
    xs, xd = T['input.x']
    X = [xd[i * F:(i + 1) * F] for i in range(xs[0])]
    idx = T['input.index'][1] if 'input.index' in T else [0] * xs[0]
    dim_size = fwd.get('dim_size') or (max(idx) + 1)
    w = rows(T['lossw.out'][1], T['lossw.out'][0])
    y = model.forward(X, idx, dim_size)

    def err(got, exp):
        return max(abs(a - b) for a, b in zip(got, exp)) / max(1, max(abs(b) for b in exp))
    e_out = err([v for r in y for v in r], T['expect.out'][1])
    rng = random.Random(0)
    cands = [(n, j) for n, _ in model.layout for j in range(len(params[n]))]
    cands += [('input.x', j) for j in range(len(xd))]
    only = set(rng.sample(cands, min(samples, len(cands))))
    g = gradients(model, X, idx, dim_size, w, only)
    e_grad = 0.0
    for n, j in only:
        exp = T['expect.grad.' + n][1]
        scale = max(1, max(abs(b) for b in exp))
        e_grad = max(e_grad, abs(g[n][j] - exp[j]) / scale)
    print('%s: out error %.2e, gradient error on %d sampled entries %.2e'
          % (path.split('/')[-1], e_out, len(only), e_grad))
    return max(e_out, e_grad)


if __name__ == '__main__':
    if len(sys.argv) >= 2 and sys.argv[1] == '--check':
        worst = max(check(p) for p in sys.argv[2:])
        sys.exit(0 if worst < 1e-8 else 1)
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    for spec in CASES:
        t, meta = make_case(spec)
        save('%s/%s.safetensors' % (out, spec['name']), t, meta)
        print('wrote', spec['name'], '--', meta['note'])
