// CPU kernels of the masking ops: mask_tokens (MLM) and random_masking (MAE).
//
// Every random bit comes from Philox keyed by the call's seed and indexed by
// the element (common/philox.h), and the work is cut into fixed blocks of
// tokens or rows, so the output does not depend on the thread count.
//
// mask_tokens reads the ids (and the special-tokens mask) once and writes the
// masked ids and the labels; ids outside the vocabulary pass through like any
// other, unless check_ids asked for a vectorised scan of them before any write. One
// Philox call gives the selection words of 4 tokens, computed 16 or
// 32 at a time in SIMD lanes (philox_lanes.h). A token selected by its own
// selection word also takes from that word the choice between mask token,
// random id and keeping the token, in branch-free loops that GCC vectorises;
// only the random ids (mlm_probability * random_replace_prob of the tokens)
// call Philox again. Exact counts and whole words draw the choice from the
// kReplace stream for each selected token.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "../common/alloc.h"
#include "../common/simd.h"
#include "args.h"
#include "philox_lanes.h"

namespace ssl_fast::cpu {
namespace {

constexpr int64_t kTokenBlock = 4096;  // tokens per parallel block (a multiple of 4)
constexpr int64_t kChunk = 256;        // tokens whose selection words are computed together
static_assert(kChunk % 64 == 0, "a chunk's flags are read 64 at a time");
constexpr int64_t kTaskWork = int64_t(1) << 15;  // elements a parallel task should at least handle

// Rows per parallel task for rows of `work` elements each: small calls stay on one
// thread, where waking a second one would cost more than it saves.
int64_t row_grain(int64_t work) { return std::max<int64_t>(1, kTaskWork / std::max<int64_t>(1, work)); }

// Selection words of the tokens [first, first + n), first a multiple of 4; out has
// room for n rounded up to a multiple of 4.
void selection_words(const philox::Key& key, int64_t first, int64_t n, uint32_t* out) {
  philox_words(key, static_cast<uint64_t>(first / 4), (n + 3) / 4, philox::kSelect, out);
}

// Bit b of the result is flag[b], for 8 flags of 0 or 1: the multiply moves byte b's
// low bit to bit 56 + b, and no other partial product reaches bits 56-63.
SSL_FAST_INLINE uint64_t pack_flags(const uint8_t* flag) {
  uint64_t x;
  std::memcpy(&x, flag, sizeof x);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  x = __builtin_bswap64(x);
#endif
  return (x * 0x0102040810204080u) >> 56;
}

// u < t for 32-bit words u and a threshold t <= 2^32, in 32-bit arithmetic, which
// GCC vectorises in 32-bit lanes.
struct Below {
  uint32_t max;
  bool any;
  explicit Below(uint64_t t) : max(static_cast<uint32_t>(t - (t > 0))), any(t > 0) {}
  SSL_FAST_INLINE bool operator()(uint32_t u) const { return any & (u <= max); }
};

// Whether every id is inside the vocabulary: an integer reduction, which GCC vectorises.
template <typename id_t>
SSL_FAST_CLONES bool ids_in_vocabulary(const id_t* ids, int64_t n, int64_t vocab_size) {
  uint64_t outside = 0;
  for (int64_t i = 0; i < n; ++i) outside |= static_cast<uint64_t>(int64_t(ids[i])) >= uint64_t(vocab_size);
  return !outside;
}

// The operands of one call, typed. The parameters are a copy, so that the stores to
// the outputs cannot alias them and the hot loop keeps them in registers.
template <typename id_t>
struct TokenPass {
  const MaskTokensCall& c;
  const MaskTokensParams p;
  const id_t* ids;
  id_t* out;  // ids itself in place
  int64_t* labels;
  const uint8_t* special_mask;
  const int64_t* word_ids;

  bool special(int64_t i, int64_t id) const {
    return (special_mask && special_mask[i]) || p.in_special_ids(id) || (word_ids && word_ids[i] < 0);
  }

  void write(int64_t i, bool selected) const {
    const auto t = p.token(static_cast<uint64_t>(i), ids[i], selected, false, 0);
    out[i] = static_cast<id_t>(t.id);
    labels[i] = t.label;
  }

  // Bernoulli selection per token (or per word), tokens [begin, end), in chunks of
  // kChunk. Branch-free loops that GCC vectorises take the decisions (selected,
  // masked, random id) of every token from its selection word and write the labels
  // and the ids; then the few that draw from the kReplace stream (the random ids,
  // mlm_probability * random_replace_prob of the tokens; with word ids, every
  // selected token) are found from their flags 64 at a time.
  template <bool kMask, bool kIds, bool kWords>
  SSL_FAST_CLONES void bernoulli(int64_t begin, int64_t end) const {
    const MaskTokensParams q = p;  // a local: GCC reloads members after every store through a pointer
    const id_t* in = ids;
    id_t* __restrict to = out;
    int64_t* __restrict label = labels;
    const uint8_t* __restrict mask = special_mask;
    // MaskTokensParams::replace_selected_by's decision, on 32-bit words.
    const Below selected(q.select), masked(q.selected_mask), randomised(q.selected_random);
    uint32_t u[kChunk];
    uint8_t special_id[kChunk], flag[kChunk], to_mask[kChunk];
    uint8_t to_draw[kChunk] = {};  // read 8 at a time: bits past the chunk's end are cleared
    for (int64_t start = begin; start < end; start += kChunk) {
      const int64_t n = std::min(kChunk, end - start);
      if constexpr (kWords) {
        for (int64_t j = 0; j < n; ++j) {
          const int64_t i = start + j;
          u[j] = q.key.word(static_cast<uint32_t>(word_ids[i]), static_cast<uint32_t>(i / c.length)).w[0];
        }
      } else {
        selection_words(q.key, start, n, u);
      }
      if (to != in) std::copy(in + start, in + start + n, to + start);
      if constexpr (kIds) {  // one pass per special id: loops that vectorise
        std::fill(special_id, special_id + n, uint8_t(0));
        for (int64_t k = 0; k < q.n_special; ++k) {
          const int64_t s = q.special_ids[k];
          for (int64_t j = 0; j < n; ++j) special_id[j] |= to[start + j] == s;
        }
      }
      for (int64_t j = 0; j < n; ++j) {
        bool special = false;
        if constexpr (kWords) special = this->special(start + j, to[start + j]);  // rare: every check at run time
        if constexpr (kMask) special |= mask[start + j] != 0;
        if constexpr (kIds) special |= special_id[j] != 0;
        const bool chosen = !special & selected(u[j]);
        flag[j] = chosen;
        to_mask[j] = !kWords & chosen & masked(u[j]);
        to_draw[j] = chosen & (kWords | (!masked(u[j]) & randomised(u[j])));
      }
      for (int64_t j = 0; j < n; ++j) {
        const int64_t id = to[start + j];
        label[start + j] = flag[j] ? id : -100;
        to[start + j] = to_mask[j] ? static_cast<id_t>(q.mask_token_id) : static_cast<id_t>(id);
      }
      for (int64_t w = 0; w < n; w += 64) {
        uint64_t bits = 0;  // bit b: token w + b draws
        for (int b = 0; b < 64; b += 8) bits |= pack_flags(to_draw + w + b) << b;
        if (n - w < 64) bits &= (uint64_t(1) << (n - w)) - 1;
        for (; bits; bits &= bits - 1) {
          const int64_t i = start + w + __builtin_ctzll(bits);
          const auto index = static_cast<uint64_t>(i);
          to[i] = static_cast<id_t>(kWords ? q.replace_selected(index, to[i])
                                           : q.random_id(q.key(index, philox::kReplace)));
        }
      }
    }
  }

  void bernoulli(int64_t begin, int64_t end) const {
    const bool mask = special_mask != nullptr, ids_given = p.n_special > 0, words = word_ids != nullptr;
    if (words) return bernoulli<false, false, true>(begin, end);
    if (mask) return ids_given ? bernoulli<true, true, false>(begin, end) : bernoulli<true, false, false>(begin, end);
    return ids_given ? bernoulli<false, true, false>(begin, end) : bernoulli<false, false, false>(begin, end);
  }

  // exact_count: the round(p * m) non-special tokens of the row with the smallest rank keys.
  void exact_row(int64_t row, std::vector<uint64_t>& keys, std::vector<uint32_t>& u) const {
    const int64_t begin = row * c.length, L = c.length;
    const int64_t first = begin & ~int64_t(3);  // selection words come in groups of 4
    selection_words(c.params.key, first, begin + L - first, u.data());
    const uint32_t* word = u.data() + (begin - first);
    keys.clear();
    for (int64_t l = 0; l < L; ++l) {
      if (!special(begin + l, ids[begin + l])) keys.push_back(rank_key(word[l], l));
    }
    const int64_t k = exact_count(c.probability, static_cast<int64_t>(keys.size()));
    uint64_t last = 0;  // the largest selected key
    if (k > 0) {
      std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end());
      last = keys[k - 1];
    }
    for (int64_t l = 0; l < L; ++l) {
      const int64_t i = begin + l;
      write(i, k > 0 && !special(i, ids[i]) && rank_key(word[l], l) <= last);
    }
  }

  void run() const {
    const int64_t n = c.rows * c.length;
    if (c.exact) {
      at::parallel_for(0, c.rows, row_grain(c.length), [&](int64_t r0, int64_t r1) {
        std::vector<uint64_t> keys;
        std::vector<uint32_t> u(c.length + 8);
        keys.reserve(c.length);
        for (int64_t r = r0; r < r1; ++r) exact_row(r, keys, u);
      });
    } else {
      const int64_t blocks = (n + kTokenBlock - 1) / kTokenBlock;
      at::parallel_for(0, blocks, std::max<int64_t>(1, kTaskWork / kTokenBlock), [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) bernoulli(b * kTokenBlock, std::min(n, (b + 1) * kTokenBlock));
      });
    }
  }
};

// random_masking: per row, sort the L positions by (noise word, position) with
// a bucket sort on the top bits of the word (uniform, so the buckets hold ~1
// key each and the final insertion sort moves little): O(L) where argsort is
// O(L log L), and ids_restore is the inverse permutation, not a second sort.
struct RowSorter {
  std::vector<uint64_t> keys, sorted;
  std::vector<int64_t> count;
  std::vector<uint32_t> u;

  // Positions of one row in ascending (word, position) order, in `sorted` (low 32 bits).
  void sort(const philox::Key& key, int64_t begin, int64_t L) {
    const int64_t first = begin & ~int64_t(3);
    u.resize(begin + L - first + 4);
    selection_words(key, first, begin + L - first, u.data());
    const uint32_t* word = u.data() + (begin - first);
    int bits = 0;
    while ((int64_t(1) << bits) < L && bits < 16) ++bits;
    const int shift = 32 - bits;
    count.assign((int64_t(1) << bits) + 1, 0);
    keys.resize(L);
    sorted.resize(L);
    for (int64_t l = 0; l < L; ++l) {
      keys[l] = rank_key(word[l], l);
      ++count[bits ? (word[l] >> shift) + 1 : 1];
    }
    for (size_t b = 1; b < count.size(); ++b) count[b] += count[b - 1];
    for (int64_t l = 0; l < L; ++l) sorted[count[bits ? word[l] >> shift : 0]++] = keys[l];
    for (int64_t i = 1; i < L; ++i) {  // ordered by bucket already: only in-bucket inversions remain
      const uint64_t v = sorted[i];
      int64_t j = i;
      for (; j > 0 && sorted[j - 1] > v; --j) sorted[j] = sorted[j - 1];
      sorted[j] = v;
    }
  }
};

// The passes of this backend, for MaskingOps (masking/args.h).
struct Passes {
  static at::Tensor output(const at::Tensor& ids, at::ScalarType dtype) { return empty(ids.sizes(), dtype); }

  static bool in_vocabulary(const MaskTokensCall& c) {
    std::atomic<bool> inside{true};
    AT_DISPATCH_INDEX_TYPES(c.ids.scalar_type(), "ssl_fast_mask_tokens_check_cpu", [&] {
      const index_t* ids = c.ids.const_data_ptr<index_t>();
      at::parallel_for(0, c.rows * c.length, kTaskWork, [&](int64_t i0, int64_t i1) {
        if (!ids_in_vocabulary(ids + i0, i1 - i0, c.params.vocab_size)) inside = false;
      });
    });
    return inside.load();
  }

  // out may be c.ids: ids are read before they are written, token by token
  // (exact_count reads a whole row first).
  static void mask_tokens(const MaskTokensCall& c, const at::Tensor& out, const at::Tensor& labels) {
    AT_DISPATCH_INDEX_TYPES(c.ids.scalar_type(), "ssl_fast_mask_tokens_cpu", [&] {
      TokenPass<index_t>{
          c, c.params, c.ids.const_data_ptr<index_t>(), out.data_ptr<index_t>(), labels.data_ptr<int64_t>(),
          c.special_mask.defined() ? reinterpret_cast<const uint8_t*>(c.special_mask.const_data_ptr<bool>())
                                   : nullptr,
          c.word_ids.defined() ? c.word_ids.const_data_ptr<int64_t>() : nullptr}
          .run();
    });
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> random_masking(
      const at::Tensor& x_in, int64_t len_keep, int64_t seed, int64_t offset) {
    const at::Tensor x = x_in.contiguous();
    const int64_t N = x.size(0), L = x.size(1), D = x.size(2);
    at::Tensor kept = empty({N, len_keep, D}, x.scalar_type());
    at::Tensor mask = empty({N, L}, at::kFloat);
    at::Tensor restore = empty({N, L}, at::kLong);
    const auto key = philox::make_key(seed, offset);
    const size_t row_bytes = static_cast<size_t>(D) * x.element_size();
    const auto* src = static_cast<const char*>(x.const_data_ptr());
    auto* dst = static_cast<char*>(kept.data_ptr());
    float* m = mask.data_ptr<float>();
    int64_t* r = restore.data_ptr<int64_t>();
    // Work per row: the sort (~L) and the copy of len_keep patches (~len_keep * D / 8 words).
    at::parallel_for(0, N, row_grain(L + len_keep * D / 8), [&](int64_t n0, int64_t n1) {
      RowSorter sorter;
      for (int64_t n = n0; n < n1; ++n) {
        sorter.sort(key, n * L, L);
        for (int64_t rank = 0; rank < L; ++rank) {
          const auto l = static_cast<int64_t>(sorter.sorted[rank] & 0xFFFFFFFFu);
          r[n * L + l] = rank;
          m[n * L + l] = rank < len_keep ? 0.f : 1.f;
          if (rank < len_keep && row_bytes) {
            std::memcpy(dst + (n * len_keep + rank) * row_bytes, src + (n * L + l) * row_bytes, row_bytes);
          }
        }
      }
    });
    return {kept, mask, restore};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(ssl_fast, CPU, m) { MaskingOps<Passes>::impl(m); }

}  // namespace ssl_fast::cpu
