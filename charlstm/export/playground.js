// charlstm's model in plain JavaScript, for one stream; runs in a browser page (as
// window.Charlstm) and under Node (module.exports), where the tests hold it against Python.
//
// A RESTATEMENT IN ANOTHER LANGUAGE (the one kind of copy charlstm allows: a page cannot run
// Python). This file restates two rules and nothing else: the next-token choice of
// generate/choose.py (`choose`), and what each operation of a traced plan means
// (export/trace.py's KINDS, in `run` below). No cell is written here: each layer runs its
// cell's step as traced from the cell's file (cells/), embedded in the page's metadata by
// playground.py (meta.plans).
//
//   const model = new Charlstm.Model(meta, Charlstm.decodeWeights(base64, meta.tensors));
//   let logits = model.prime([ids...]);          // from a zero state; logits (V,)
//   logits = model.step(id);                      // one more token
//   const id = Charlstm.choose(logits, {temperature, topK, topP}, rng());
//
// The weights are model.safetensors' tensors (formats/model_file.py), each layer's by the names
// its plan reads (layer{k}.NAME, through the cell's `bind`): embed (V, E), layer{k}.w_x (I, G·H)
// and layer{k}.b (G·H) for the input projection, head.w (H, V), head.b (V). Layer 0's input
// projection is folded into a table (V, G·H) once (an input-gated cell gets the embedding row
// instead). Arithmetic is in doubles over float32 weights: the probabilities agree with
// Python's to about 1e-6, so greedy text is the same; a seeded sample is not the same text as
// Python's (this draws from its own generator, not numpy's PCG64).
"use strict";
(function (root) {
  function decodeWeights(base64, tensors) {
    // base64 of little-endian float32s -> {name: Float32Array}
    let bytes;
    if (typeof Buffer !== "undefined") {
      const buf = Buffer.from(base64, "base64");
      bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength).slice();
    } else {
      const text = atob(base64);
      bytes = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    }
    const all = new Float32Array(bytes.buffer);
    const out = {};
    for (const name of Object.keys(tensors)) {
      const [offset, shape] = tensors[name];
      const n = shape.reduce((a, b) => a * b, 1);
      out[name] = all.subarray(offset, offset + n);
    }
    return out;
  }

  // out (N) += x (I) · W (I × N, row-major); four rows at a time.
  function addVecMat(out, x, W, I, N) {
    let i = 0;
    for (; i + 3 < I; i += 4) {
      const a0 = x[i], a1 = x[i + 1], a2 = x[i + 2], a3 = x[i + 3];
      const o0 = i * N, o1 = o0 + N, o2 = o1 + N, o3 = o2 + N;
      for (let j = 0; j < N; j++) {
        out[j] += a0 * W[o0 + j] + a1 * W[o1 + j] + a2 * W[o2 + j] + a3 * W[o3 + j];
      }
    }
    for (; i < I; i++) {
      const a = x[i], o = i * N;
      for (let j = 0; j < N; j++) out[j] += a * W[o + j];
    }
  }

  // A plan's operations as scalar loops over buffers of equal length (compile makes them so).
  function run(code) {
    for (const [kind, o, a, b, c] of code) {
      const n = o.length;
      switch (kind) {
        case "matmul": o.fill(0); addVecMat(o, a, b, a.length, n); break;
        case "add": for (let j = 0; j < n; j++) o[j] = a[j] + b[j]; break;
        case "sub": for (let j = 0; j < n; j++) o[j] = a[j] - b[j]; break;
        case "mul": for (let j = 0; j < n; j++) o[j] = a[j] * b[j]; break;
        case "div": for (let j = 0; j < n; j++) o[j] = a[j] / b[j]; break;
        case "sigmoid": for (let j = 0; j < n; j++) o[j] = 1 / (1 + Math.exp(-a[j])); break;
        case "tanh": for (let j = 0; j < n; j++) o[j] = Math.tanh(a[j]); break;
        case "exp": for (let j = 0; j < n; j++) o[j] = Math.exp(a[j]); break;
        case "log_sigmoid": // log σ(x), exact for large |x|
          for (let j = 0; j < n; j++) {
            const x = a[j];
            o[j] = x < 0 ? x - Math.log1p(Math.exp(x)) : -Math.log1p(Math.exp(-x));
          }
          break;
        case "maximum": for (let j = 0; j < n; j++) o[j] = Math.max(a[j], b[j]); break;
        case "gt": for (let j = 0; j < n; j++) o[j] = a[j] > b[j] ? 1 : 0; break;
        case "where": for (let j = 0; j < n; j++) o[j] = a[j] ? b[j] : c[j]; break;
        default: throw new Error("unknown operation " + kind);
      }
    }
  }

  // One layer's plan (export/trace.py's JSON), compiled once: a Float64Array per symbol of the
  // plan's width ("H", "4H", "I"), split outputs as views of what they split, parameters by
  // name, a constant as a filled buffer. `step()` runs the ops and stores the new state.
  function compile(plan, H, I, param) {
    const size = (width) => (width === "I" ? I : Number(width.slice(0, -1) || 1) * H);
    const buf = {};
    for (const name of plan.inputs) buf[name] = new Float64Array(size(plan.widths[name]));
    for (const name of plan.params) {
      buf[name] = param(name);
      if (!buf[name]) throw new Error("the page holds no parameter " + name);
    }
    const code = [];
    for (const [kind, out, args] of plan.ops) {
      if (kind === "split") { // n equal blocks: views, nothing to run
        const a = buf[args[0]], n = a.length / out.length;
        out.forEach((name, j) => { buf[name] = a.subarray(j * n, (j + 1) * n); });
        continue;
      }
      const o = (buf[out[0]] = new Float64Array(size(plan.widths[out[0]])));
      const operand = (a) => (typeof a === "number" ? new Float64Array(o.length).fill(a) : buf[a]);
      code.push([kind, o, ...args.map(operand)]);
    }
    const state = plan.inputs.slice(1).map((name) => buf[name]);
    const outs = plan.outputs.map((name) => buf[name]);
    const next = outs.map((o) => new Float64Array(o.length));
    return {
      input: buf[plan.inputs[0]], // zx, or x for an input-gated cell
      state, // h first; h is also the layer's output
      step() {
        run(code);
        next.forEach((t, j) => t.set(outs[j])); // (an output may be a view of a state input)
        state.forEach((s, j) => s.set(next[j]));
      },
      reset() { for (const s of state) s.fill(0); },
    };
  }

  class Model {
    constructor(meta, w) {
      this.L = meta.num_layers;
      this.H = meta.hidden_size;
      this.V = meta.vocab_size;
      this.E = meta.embed_size;
      this.gated = meta.plans[0].inputs[0] === "x";
      this.layers = meta.plans.map((plan, k) => {
        const param = (name) => w["layer" + k + "." + name];
        const layer = compile(plan, this.H, k === 0 ? this.E : this.H, param);
        if (!this.gated) Object.assign(layer, { w_x: param("w_x"), b: param("b") });
        return layer;
      });
      this.embed = w["embed"];
      this.w_out = w["head.w"];
      this.b_out = w["head.b"];
      if (!this.gated) { // layer 0's input projection for every token: embed · w_x + b, (V, G·H)
        const l0 = this.layers[0], GH = l0.input.length;
        this.table = new Float32Array(this.V * GH);
        const row = new Float64Array(GH);
        for (let v = 0; v < this.V; v++) {
          row.set(l0.b);
          addVecMat(row, this.embed.subarray(v * this.E, (v + 1) * this.E), l0.w_x, this.E, GH);
          this.table.set(row, v * GH);
        }
      }
      this.logits = new Float64Array(this.V);
      this.reset();
    }

    reset() {
      for (const layer of this.layers) layer.reset();
    }

    // Feed one token id; returns the next-token logits (V,), a buffer the next step overwrites.
    step(token) {
      let below = null; // the layer below's new h
      for (let k = 0; k < this.L; k++) {
        const layer = this.layers[k], x = layer.input, n = x.length;
        if (k === 0) {
          const rows = this.gated ? this.embed : this.table;
          x.set(rows.subarray(token * n, (token + 1) * n));
        } else if (this.gated) {
          x.set(below);
        } else {
          x.set(layer.b);
          addVecMat(x, below, layer.w_x, this.H, n);
        }
        layer.step();
        below = layer.state[0];
      }
      this.logits.set(this.b_out);
      addVecMat(this.logits, below, this.w_out, this.H, this.V);
      return this.logits;
    }

    // Warm the state on ids from zero; returns the logits after the last one.
    prime(ids) {
      this.reset();
      let logits = null;
      for (const id of ids) logits = this.step(id);
      return logits;
    }
  }

  // generate/choose.py's rule (restated): temperature (0 = the first most likely), top-k,
  // top-p, then the first token whose cumulative probability exceeds u · total, in vocabulary
  // order.
  function choose(logits, cfg, u) {
    const V = logits.length;
    let best = 0;
    for (let j = 1; j < V; j++) if (logits[j] > logits[best]) best = j;
    const t = cfg.temperature;
    if (t === 0) return best;
    const z = new Float64Array(V);
    for (let j = 0; j < V; j++) {
      z[j] = logits[j] / t;
      if (!Number.isFinite(z[j])) return best;
    }
    if (cfg.topK > 0 && cfg.topK < V) {
      const kth = Array.from(z).sort((a, b) => b - a)[cfg.topK - 1];
      for (let j = 0; j < V; j++) if (z[j] < kth) z[j] = -Infinity;
    }
    let max = -Infinity;
    for (let j = 0; j < V; j++) if (z[j] > max) max = z[j];
    const p = new Float64Array(V);
    for (let j = 0; j < V; j++) p[j] = Math.exp(z[j] - max);
    if (cfg.topP < 1) {
      const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a] || a - b);
      let total = 0;
      for (const j of order) total += p[j];
      let before = 0;
      const kept = new Float64Array(V);
      for (const j of order) {
        if (before / total < cfg.topP) kept[j] = p[j];
        before += p[j];
      }
      p.set(kept);
    }
    let sum = 0;
    for (let j = 0; j < V; j++) sum += p[j];
    const target = u * sum;
    let cum = 0, picked = 0;
    for (let j = 0; j < V; j++) {
      cum += p[j];
      if (cum <= target) picked++;
    }
    return Math.min(picked, V - 1);
  }

  // A seeded stream of uniform draws in [0, 1) with 53 bits (SplitMix64 over BigInt). Not
  // numpy's PCG64: a seed gives its own text here, reproducible in any browser.
  function seeded(seed) {
    let s = BigInt.asUintN(64, BigInt(seed));
    const M = (1n << 64n) - 1n;
    return function () {
      s = (s + 0x9e3779b97f4a7c15n) & M;
      let x = s;
      x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
      x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & M;
      x = x ^ (x >> 31n);
      return Number(x >> 11n) / 9007199254740992;
    };
  }

  const api = { Model, choose, seeded, decodeWeights, addVecMat };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.Charlstm = api;
})(this);
