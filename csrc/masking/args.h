// The masking operators, written once for every backend: the checks of an op call and
// the op entry points. The Python layer (ssl_fast/ops/masking.py) validates user input
// with friendlier messages; these checks guard direct calls of torch.ops.ssl_fast.*.
// A backend supplies its passes as
//   struct Passes {
//     // A new contiguous tensor of the shape of ids, of `dtype`, on the device of ids.
//     static at::Tensor output(const at::Tensor& ids, at::ScalarType dtype);
//     // Whether every id of the call lies in [0, vocab_size) (asked with check_ids only).
//     static bool in_vocabulary(const MaskTokensCall& c);
//     // Writes the masked ids of the call to out, which may be c.ids itself, and the labels.
//     static void mask_tokens(const MaskTokensCall& c, const at::Tensor& out, const at::Tensor& labels);
//     static std::tuple<at::Tensor, at::Tensor, at::Tensor> random_masking(
//         const at::Tensor& x, int64_t len_keep, int64_t seed, int64_t offset);
//   };
// and registers MaskingOps<Passes>::impl(m) in its TORCH_LIBRARY_IMPL block.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "tokens.h"

namespace ssl_fast {

// A validated mask_tokens call: the operands as contiguous [rows, length] views.
struct MaskTokensCall {
  at::Tensor ids, special_mask, special_ids, word_ids;
  int64_t rows, length;
  MaskTokensParams params;
  double probability;
  bool exact;
};

MaskTokensCall check_mask_tokens(
    const char* op, const at::Tensor& input_ids, const std::optional<at::Tensor>& special_tokens_mask,
    const std::optional<at::Tensor>& special_ids, const std::optional<at::Tensor>& word_ids,
    int64_t mask_token_id, int64_t vocab_size, int64_t select_threshold, int64_t mask_threshold,
    int64_t random_threshold, double probability, bool exact, bool exclude_special_from_random,
    int64_t seed, int64_t offset);

void check_random_masking(const char* op, const at::Tensor& x, int64_t len_keep);

// A ValueError naming the first id of c outside the vocabulary, when Passes::in_vocabulary
// finds one (the backend's own scan: vectorised on the CPU, a reduction and a sync on CUDA).
[[noreturn]] void ids_outside_vocabulary(const MaskTokensCall& c);

template <class Passes>
void check_vocabulary(const MaskTokensCall& c) {
  if (!Passes::in_vocabulary(c)) ids_outside_vocabulary(c);
}

template <class Passes>
struct MaskingOps {
  static std::tuple<at::Tensor, at::Tensor> mask_tokens(
      const at::Tensor& input_ids, const std::optional<at::Tensor>& special_tokens_mask,
      const std::optional<at::Tensor>& special_ids, const std::optional<at::Tensor>& word_ids,
      int64_t mask_token_id, int64_t vocab_size, int64_t select_threshold, int64_t mask_threshold,
      int64_t random_threshold, double probability, bool exact, bool exclude_special_from_random, bool check_ids,
      int64_t seed, int64_t offset) {
    const auto c = check_mask_tokens("ssl_fast::mask_tokens", input_ids, special_tokens_mask, special_ids, word_ids,
                                     mask_token_id, vocab_size, select_threshold, mask_threshold, random_threshold,
                                     probability, exact, exclude_special_from_random, seed, offset);
    if (check_ids) check_vocabulary<Passes>(c);
    at::Tensor out = Passes::output(c.ids, c.ids.scalar_type());
    at::Tensor labels = Passes::output(c.ids, at::kLong);
    Passes::mask_tokens(c, out, labels);
    return {out.view(input_ids.sizes()), labels.view(input_ids.sizes())};
  }

  // In place: the passes may write the ids they read (each backend says why that is
  // safe). A non-contiguous input is masked in a contiguous copy, then copied back.
  static at::Tensor mask_tokens_(
      at::Tensor& input_ids, const std::optional<at::Tensor>& special_tokens_mask,
      const std::optional<at::Tensor>& special_ids, const std::optional<at::Tensor>& word_ids,
      int64_t mask_token_id, int64_t vocab_size, int64_t select_threshold, int64_t mask_threshold,
      int64_t random_threshold, double probability, bool exact, bool exclude_special_from_random, bool check_ids,
      int64_t seed, int64_t offset) {
    const auto c = check_mask_tokens("ssl_fast::mask_tokens_", input_ids, special_tokens_mask, special_ids,
                                     word_ids, mask_token_id, vocab_size, select_threshold, mask_threshold,
                                     random_threshold, probability, exact, exclude_special_from_random, seed, offset);
    if (check_ids) check_vocabulary<Passes>(c);  // before the ids are written
    at::Tensor labels = Passes::output(c.ids, at::kLong);
    Passes::mask_tokens(c, c.ids, labels);
    if (!c.ids.is_same(input_ids)) input_ids.copy_(c.ids);
    return labels.view(input_ids.sizes());
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> random_masking(
      const at::Tensor& x, int64_t len_keep, int64_t seed, int64_t offset) {
    check_random_masking("ssl_fast::random_masking", x, len_keep);
    return Passes::random_masking(x, len_keep, seed, offset);
  }

  static void impl(torch::Library& m) {
    m.impl("mask_tokens", &mask_tokens);
    m.impl("mask_tokens_", &mask_tokens_);
    m.impl("random_masking", &random_masking);
  }
};

}  // namespace ssl_fast
