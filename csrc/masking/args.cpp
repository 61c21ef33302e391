#include "args.h"

namespace ssl_fast {

namespace {

// floor(select * t / 2^32): threshold t on a word uniform below 2^32, for a word uniform below select.
uint64_t scale_threshold(uint64_t select, uint64_t t) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(select) * t) >> 32);
}

}  // namespace

MaskTokensCall check_mask_tokens(
    const char* op, const at::Tensor& input_ids, const std::optional<at::Tensor>& special_tokens_mask,
    const std::optional<at::Tensor>& special_ids, const std::optional<at::Tensor>& word_ids,
    int64_t mask_token_id, int64_t vocab_size, int64_t select_threshold, int64_t mask_threshold,
    int64_t random_threshold, double probability, bool exact, bool exclude_special_from_random,
    int64_t seed, int64_t offset) {
  TORCH_CHECK(input_ids.scalar_type() == at::kLong || input_ids.scalar_type() == at::kInt, op,
              ": input_ids must be int64 or int32, got ", input_ids.scalar_type());
  TORCH_CHECK(input_ids.dim() >= 1 && input_ids.numel() > 0, op, ": input_ids is empty (shape ",
              input_ids.sizes(), ")");
  TORCH_CHECK(vocab_size > 0 && vocab_size < (int64_t(1) << 31), op, ": vocab_size must be in [1, 2^31), got ",
              vocab_size);
  TORCH_CHECK(mask_token_id >= 0 && mask_token_id < vocab_size, op, ": mask_token_id ", mask_token_id,
              " is outside the vocabulary [0, ", vocab_size, ")");
  constexpr int64_t kOne = int64_t(1) << 32;
  TORCH_CHECK(0 <= select_threshold && select_threshold <= kOne && 0 <= mask_threshold &&
                  mask_threshold <= random_threshold && random_threshold <= kOne,
              op, ": thresholds must satisfy 0 <= mask <= random <= 2^32 and 0 <= select <= 2^32");
  TORCH_CHECK(!(exact && word_ids.has_value()), op, ": exact_count does not combine with word_ids");
  MaskTokensCall c;
  c.length = input_ids.size(-1);
  c.rows = input_ids.numel() / c.length;
  c.ids = input_ids.contiguous();
  auto same_shape = [&](const at::Tensor& t, const char* what, at::ScalarType dtype) {
    TORCH_CHECK(t.sizes() == input_ids.sizes(), op, ": ", what, " of shape ", t.sizes(),
                " does not match input_ids of shape ", input_ids.sizes());
    TORCH_CHECK(t.scalar_type() == dtype, op, ": ", what, " must be ", dtype, ", got ", t.scalar_type());
    TORCH_CHECK(t.device() == input_ids.device(), op, ": ", what, " is on ", t.device(),
                " but input_ids is on ", input_ids.device());
    return t.contiguous();
  };
  if (special_tokens_mask) c.special_mask = same_shape(*special_tokens_mask, "special_tokens_mask", at::kBool);
  if (word_ids) c.word_ids = same_shape(*word_ids, "word_ids", at::kLong);
  int64_t n_special = 0;
  if (special_ids) {
    TORCH_CHECK(special_ids->dim() == 1 && special_ids->scalar_type() == at::kLong &&
                    special_ids->device() == input_ids.device(),
                op, ": special_ids must be a 1-D int64 tensor on the device of input_ids");
    c.special_ids = special_ids->contiguous();
    n_special = c.special_ids.numel();
  }
  TORCH_CHECK(!exclude_special_from_random || n_special < vocab_size, op,
              ": every id of the vocabulary is special, no random replacement is possible");
  c.probability = probability;
  c.exact = exact;
  c.params = MaskTokensParams{
      philox::make_key(seed, offset), uint64_t(select_threshold), uint64_t(mask_threshold),
      uint64_t(random_threshold), scale_threshold(select_threshold, mask_threshold),
      scale_threshold(select_threshold, random_threshold), mask_token_id, vocab_size,
      n_special ? c.special_ids.data_ptr<int64_t>() : nullptr, n_special, exclude_special_from_random};
  return c;
}

void check_random_masking(const char* op, const at::Tensor& x, int64_t len_keep) {
  TORCH_CHECK(x.dim() == 3, op, ": x must have shape [N, L, D], got ", x.sizes());
  TORCH_CHECK(0 <= len_keep && len_keep <= x.size(1), op, ": len_keep must be in [0, L = ", x.size(1),
              "], got ", len_keep);
}

void ids_outside_vocabulary(const MaskTokensCall& c) {
  const at::Tensor ids = c.ids.reshape(-1);
  const int64_t bad = ids.masked_select((ids < 0).logical_or_(ids >= c.params.vocab_size))[0].item<int64_t>();
  TORCH_CHECK_VALUE(false, "mask_tokens: input_ids holds ids outside the vocabulary [0, ", c.params.vocab_size,
                    "), e.g. ", bad, " (check_ids=False lets them pass through)");
}

}  // namespace ssl_fast
