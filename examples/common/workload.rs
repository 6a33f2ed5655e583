//! The realistic workload of bench/realistic.sh (issue 18), shared by its origin
//! (`report_origin --reports N --seed S`) and its load driver (`workload_client`): which
//! reports exist, how large each is, which are cold and how slow, and how popular each is.
//! Everything follows from the seed, so both sides agree without talking.
//!
//! - Warm reports: ids `1..=reports` (10,000 in the bench). Report of popularity rank `k` is
//!   id `k`; ranks are drawn by Zipf with exponent 1.0. The origin answers them at once.
//! - Cold reports: ids above `reports`, each asked once (the k-th cold request of a run asks
//!   for id `reports + cold_start + k`): a date range or filter nobody asked for before. The
//!   origin answers them after 1-5 s (seeded per id).
//! - Sizes: log-normal, median 40 KiB, sigma 1.0, clamped to 2 KiB..2 MiB (seeded per id).

/// splitmix64 of `x`: a well-mixed 64-bit hash.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in (0, 1] from the hash of `(seed, id, what)`.
fn unit(seed: u64, id: u64, what: u64) -> f64 {
    let h = mix(seed ^ mix(id ^ mix(what)));
    ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

pub const MEDIAN_SIZE: f64 = 40.0 * 1024.0;
pub const SIGMA: f64 = 1.0;
pub const MIN_SIZE: usize = 2 << 10;
pub const MAX_SIZE: usize = 2 << 20;

/// The size in bytes of report `id`: log-normal (Box-Muller of two seeded uniforms).
pub fn size_of(seed: u64, id: u64) -> usize {
    let (u1, u2) = (unit(seed, id, 1), unit(seed, id, 2));
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    let s = (MEDIAN_SIZE.ln() + SIGMA * z).exp();
    (s as usize).clamp(MIN_SIZE, MAX_SIZE)
}

/// Whether report `id` is cold in a catalog of `reports` warm reports.
pub fn is_cold(reports: u64, id: u64) -> bool {
    id > reports
}

/// How long the origin takes for cold report `id`: 1000..=5000 ms, seeded.
pub fn cold_delay_ms(seed: u64, id: u64) -> u64 {
    1000 + mix(seed ^ mix(id ^ 0xc01d)) % 4001
}

/// Zipf(s) over ranks `1..=n`: the cumulative distribution, sampled by binary search.
#[allow(dead_code)] // the driver samples; the origin does not
pub struct Zipf {
    cdf: Vec<f64>,
}

#[allow(dead_code)]
impl Zipf {
    pub fn new(n: u64, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    /// The rank (1-based) for a uniform `u` in [0, 1).
    pub fn rank(&self, u: f64) -> u64 {
        let i = self.cdf.partition_point(|&c| c < u);
        (i.min(self.cdf.len() - 1) + 1) as u64
    }
}

/// A small seeded generator (xorshift64*), one per driver task.
#[allow(dead_code)]
pub struct Rng(u64);

#[allow(dead_code)]
impl Rng {
    pub fn new(seed: u64, stream: u64) -> Rng {
        Rng(mix(seed ^ mix(stream ^ 0x5eed)) | 1)
    }
    /// A uniform number in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}
