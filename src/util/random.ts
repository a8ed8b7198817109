/**
 * Seeded pseudo-random numbers (mulberry32 + Box–Muller). Every random thing in the project — simulator, weight
 * initialisation, test inputs — draws from here so a seed reproduces a run exactly.
 */
export class Rng {
  private state: number;
  // The second value of the last Box–Muller pair, while `hasSpare`. Kept as a number field that never holds
  // `undefined`, so V8 stores it unboxed: no heap number per draw (the simulator draws millions).
  private spare = 0;
  private hasSpare = false;

  constructor(seed: number) {
    if (!Number.isFinite(seed)) {
      throw new TypeError(`Expected finite number for seed but received ${String(seed)}`);
    }
    this.state = Math.trunc(seed) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Standard normal. */
  normal(): number {
    if (this.hasSpare) {
      this.hasSpare = false;
      return this.spare;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    this.hasSpare = true;
    return r * Math.cos(2 * Math.PI * v);
  }

  /** Student-t with `nu` degrees of freedom, scaled to unit variance (fat tails for nu > 2). */
  studentT(nu: number): number {
    let chi2 = 0;
    for (let i = 0; i < nu; i++) {
      const z = this.normal();
      chi2 += z * z;
    }
    const t = this.normal() / Math.sqrt(chi2 / nu);
    return nu > 2 ? t * Math.sqrt((nu - 2) / nu) : t;
  }

  /** Fills a Float32Array with N(0, scale²). */
  fillNormal(out: Float32Array, scale = 1): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = this.normal() * scale;
    return out;
  }

  /** A new generator whose stream depends on this seed and a label (e.g. a ticker), independent of call order. */
  static derive(seed: number, label: string): Rng {
    let h = (Math.trunc(seed) ^ 0x9e3779b9) >>> 0;
    for (let i = 0; i < label.length; i++) {
      h = Math.imul(h ^ label.charCodeAt(i), 0x01000193) >>> 0;
    }
    return new Rng(h);
  }
}
