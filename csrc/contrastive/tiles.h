// The tile machinery shared by the CPU kernels of the contrastive family (cpu.cpp: the
// log-sum-exp of NT-Xent and InfoNCE; siglip_cpu.cpp: SigLIP's sigmoid loss): the tile
// size, the schedules of tiles in rounds, a vectorisable exp and the lane sums.
//
// A round holds tiles of which no two share a row block or a column block, so a round
// runs in parallel without locks or atomics and every block adds its tiles in round
// order: with the GEMMs of tile_gemm.h, results do not depend on the thread count.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../common/logmath.h"
#include "../common/simd.h"

namespace ssl_fast::cpu {

constexpr int64_t kTile = 256;  // a 256 x 256 fp32 tile is 256 KiB: it stays in L2
constexpr int kLanes = 16;      // independent accumulators, so the row sums vectorise

// exp for the tiles' epilogues (logmath.h); 0 for -inf, an excluded pair.
SSL_FAST_INLINE float tile_exp(float x) { return logmath::exp_flushed(x); }
SSL_FAST_INLINE double tile_exp(double x) { return x < -708.0 ? 0.0 : std::exp(x); }

struct Tile {
  int64_t i, j;  // row block, column block
};
using Rounds = std::vector<std::vector<Tile>>;

// All tiles of an nbq x nbk grid; round r holds the tiles (i, (i + r) mod L).
inline Rounds cross_rounds(int64_t nbq, int64_t nbk) {
  const int64_t len = std::max(nbq, nbk);
  Rounds rounds;
  for (int64_t r = 0; r < len; ++r) {
    std::vector<Tile> round;
    for (int64_t i = 0; i < nbq; ++i) {
      if ((i + r) % len < nbk) round.push_back({i, (i + r) % len});
    }
    rounds.push_back(std::move(round));
  }
  return rounds;
}

// Row-block height of a rows x cols grid. A round holds one tile per row block, so few
// rows (a batch against a large bank or queue of keys) would leave one tile per round
// and one thread busy: they get shorter blocks, down to 32 rows, aiming at 8 per round.
// The height depends on the shape only, so results stay independent of the thread count.
inline int64_t cross_block_rows(int64_t rows) {
  constexpr int64_t kWanted = 8, kMin = 32, kAlign = 8;
  const int64_t height = ((rows + kWanted - 1) / kWanted + kAlign - 1) / kAlign * kAlign;
  return std::clamp(height, kMin, kTile);
}

// Runs f(t) for every t in [0, n) on the threads of one parallel region, each thread taking
// the next index as it finishes one: the tiles of a round cost the same, but on a busy machine a
// static split waits for a descheduled thread. What f(t) computes must not depend on the thread.
template <typename F>
void for_each_dynamic(int64_t n, F&& f) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(n, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    for (int64_t t = next++; t < n; t = next++) f(t);
  });
}

// The sum of kLanes accumulators, pairwise in a fixed order (destroys `lane`).
template <typename acc_t>
SSL_FAST_INLINE acc_t sum_lanes(acc_t* lane) {
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int k = 0; k < width; ++k) lane[k] += lane[k + width];
  }
  return lane[0];
}

}  // namespace ssl_fast::cpu
