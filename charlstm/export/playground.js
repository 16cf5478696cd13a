// charlstm's model in plain JavaScript: the one-token step of step.py / npstep.py and the
// next-token rule of choice.py, for one stream. No dependencies; runs in a browser page (as
// window.Charlstm) and under Node (module.exports), where the tests hold it against Python.
//
//   const model = new Charlstm.Model(meta, Charlstm.decodeWeights(base64, meta.tensors));
//   let logits = model.prime([ids...]);          // from a zero state; logits (V,)
//   logits = model.step(id);                      // one more token
//   const id = Charlstm.choose(logits, {temperature, topK, topP}, rng());
//
// The weights are model.safetensors' tensors (portable.py): embed (V, E); per layer k w_x
// (I, G·H), w_h (H, G·H), b (G·H) [+ b_h for gru, p (3, H) for peephole]; head.w (H, V),
// head.b (V). Gate blocks as step.py orders them: lstm [i f o g], gru [r z n], peephole
// [i f g o], coupled [f o g], rnn one block. Layer 0's input projection is folded into a table
// (V, G·H) once. Arithmetic is in doubles over float32 weights: the probabilities agree with
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

  const sigmoid = (x) => 1 / (1 + Math.exp(-x));
  const GATES = { lstm: 4, gru: 3, rnn: 1, peephole: 4, coupled: 3 };

  class Model {
    constructor(meta, w) {
      this.cell = meta.cell;
      this.L = meta.num_layers;
      this.H = meta.hidden_size;
      this.V = meta.vocab_size;
      this.E = meta.embed_size;
      this.G = GATES[this.cell];
      if (!this.G) throw new Error("unknown cell " + this.cell);
      const GH = this.G * this.H;
      this.layers = [];
      for (let k = 0; k < this.L; k++) {
        this.layers.push({
          w_x: w["layer" + k + ".w_x"], w_h: w["layer" + k + ".w_h"], b: w["layer" + k + ".b"],
          b_h: w["layer" + k + ".b_h"], p: w["layer" + k + ".p"],
        });
      }
      this.w_out = w["head.w"];
      this.b_out = w["head.b"];
      // Layer 0's input projection for every token: embed · w_x + b, (V, G·H).
      const embed = w["embed"], l0 = this.layers[0];
      this.table = new Float32Array(this.V * GH);
      const row = new Float64Array(GH);
      for (let v = 0; v < this.V; v++) {
        row.set(l0.b);
        addVecMat(row, embed.subarray(v * this.E, (v + 1) * this.E), l0.w_x, this.E, GH);
        this.table.set(row, v * GH);
      }
      this.z = new Float64Array(GH);
      this.zh = new Float64Array(GH);
      this.logits = new Float64Array(this.V);
      this.reset();
    }

    reset() {
      this.h = [];
      this.c = [];
      for (let k = 0; k < this.L; k++) {
        this.h.push(new Float64Array(this.H));
        this.c.push(new Float64Array(this.H));
      }
    }

    // Feed one token id; returns the next-token logits (V,), a buffer the next step overwrites.
    step(token) {
      const H = this.H, GH = this.G * H, z = this.z, zh = this.zh, cell = this.cell;
      for (let k = 0; k < this.L; k++) {
        const layer = this.layers[k], h = this.h[k];
        if (k === 0) {
          const off = token * GH;
          for (let j = 0; j < GH; j++) z[j] = this.table[off + j];
        } else {
          z.set(layer.b);
          addVecMat(z, this.h[k - 1], layer.w_x, H, GH);
        }
        if (cell === "gru") {
          zh.set(layer.b_h);
          addVecMat(zh, h, layer.w_h, H, GH);
        } else {
          addVecMat(z, h, layer.w_h, H, GH);
        }
        this.cellStep(k, layer, h, this.c[k]);
      }
      const top = this.h[this.L - 1];
      this.logits.set(this.b_out);
      addVecMat(this.logits, top, this.w_out, H, this.V);
      return this.logits;
    }

    cellStep(k, layer, h, c) {
      const H = this.H, z = this.z;
      switch (this.cell) {
        case "rnn":
          for (let j = 0; j < H; j++) h[j] = Math.tanh(z[j]);
          return;
        case "gru": // torch's GRU: h = (1 − z') ⊙ n + z' ⊙ h
          for (let j = 0; j < H; j++) {
            const r = sigmoid(z[j] + this.zh[j]);
            const u = sigmoid(z[H + j] + this.zh[H + j]);
            const n = Math.tanh(z[2 * H + j] + r * this.zh[2 * H + j]);
            h[j] = n + u * (h[j] - n);
          }
          return;
        case "lstm": // [ i | f | o | g ]
          for (let j = 0; j < H; j++) {
            const i = sigmoid(z[j]), f = sigmoid(z[H + j]), o = sigmoid(z[2 * H + j]);
            const g = Math.tanh(z[3 * H + j]);
            c[j] = f * c[j] + i * g;
            h[j] = o * Math.tanh(c[j]);
          }
          return;
        case "peephole": { // [ i | f | g | o ]; o sees the new cell
          const p = layer.p;
          for (let j = 0; j < H; j++) {
            const i = sigmoid(z[j] + c[j] * p[j]);
            const f = sigmoid(z[H + j] + c[j] * p[H + j]);
            const g = Math.tanh(z[2 * H + j]);
            c[j] = f * c[j] + i * g;
            const o = sigmoid(z[3 * H + j] + c[j] * p[2 * H + j]);
            h[j] = o * Math.tanh(c[j]);
          }
          return;
        }
        case "coupled": // [ f | o | g ]: c = f ⊙ c + (1 − f) ⊙ g
          for (let j = 0; j < H; j++) {
            const f = sigmoid(z[j]), o = sigmoid(z[H + j]), g = Math.tanh(z[2 * H + j]);
            c[j] = g + f * (c[j] - g);
            h[j] = o * Math.tanh(c[j]);
          }
          return;
      }
    }

    // Warm the state on ids from zero; returns the logits after the last one.
    prime(ids) {
      this.reset();
      let logits = null;
      for (const id of ids) logits = this.step(id);
      return logits;
    }
  }

  // choice.py's rule: temperature (0 = the first most likely), top-k, top-p, then the first
  // token whose cumulative probability exceeds u · total, in vocabulary order.
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
