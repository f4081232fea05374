// Runs each dyrate op once through the dispatcher, as a C++ program embedding the library would,
// and checks the results by hand. Exit code 0 means every op gave the expected answer.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <iostream>

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::cout << (ok ? "ok    " : "FAIL  ") << what << "\n";
  failures += ok ? 0 : 1;
}

c10::OperatorHandle op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

}  // namespace

int main() {
  auto i64 = torch::TensorOptions().dtype(torch::kLong);
  // One sequence: 1 system token, 2 image tokens, 1 instruction token, 1 response token.
  // Identical keys give uniform attention: 1/5 per slot.
  auto q = torch::randn({1, 2, 8});
  auto k_cache = torch::ones({1, 1, 6, 8});
  auto lengths = torch::tensor({5}, i64), vis_start = torch::tensor({1}, i64);
  auto vis_len = torch::tensor({2}, i64), prompt_len = torch::tensor({4}, i64);
  auto scores_op = op("dyrate::attention_scores")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           std::optional<double>, int64_t, const std::optional<at::Tensor>&)>();
  auto [vis_scores, type_mass] = scores_op.call(q, k_cache, lengths, vis_start, vis_len,
                                                prompt_len, std::nullopt, 2, std::nullopt);
  expect(torch::allclose(vis_scores, torch::full({1, 2}, 0.2)), "attention_scores: vis_scores");
  expect(torch::allclose(type_mass[0][0], torch::tensor({0.2, 0.4, 0.2, 0.2})),
         "attention_scores: type_mass");
  // Two images of one token each with text between (slots 1 and 3), then 1 instruction and 1
  // response token: 6 slots at 1/6, the text between the images counted as instruction.
  auto six = torch::tensor({6}, i64), two_slots = torch::tensor({{1, 3}}, i64);
  auto [spans_scores, spans_mass] = scores_op.call(q, k_cache, six, vis_start, vis_len,
                                                   torch::tensor({5}, i64), std::nullopt, 2,
                                                   two_slots);
  expect(torch::allclose(spans_scores, torch::full({1, 2}, 1.0 / 6)) &&
             torch::allclose(spans_mass[0][0], torch::tensor({1.0, 2.0, 2.0, 1.0}) / 6),
         "attention_scores: two visual spans");

  auto scores = torch::tensor({{0.5, 0.9}});
  auto present = torch::ones({1, 2}, torch::kBool);
  auto keep = op("dyrate::select_keep")
                  .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>()
                  .call(scores, present, torch::tensor({1}, i64));
  expect(keep.equal(torch::tensor({{false, true}})), "select_keep");

  // Slots hold their own index; dropping image token 0 (slot 1) shifts slots 2..4 left.
  auto kv = torch::arange(6, torch::kFloat).view({1, 1, 1, 1, 6, 1}).repeat({1, 2, 1, 1, 1, 1});
  op("dyrate::compact_kv_")
      .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                  const at::Tensor&, const std::optional<at::Tensor>&)>()
      .call(kv, lengths, vis_start, present, keep, std::nullopt);
  expect(kv[0][0][0][0].view({-1}).slice(0, 0, 4).equal(torch::tensor({0.f, 2.f, 3.f, 4.f})),
         "compact_kv_: slots");
  expect(lengths.item<int64_t>() == 4, "compact_kv_: lengths");
  expect(present.equal(keep), "compact_kv_: present");

  // Two decode rows against a 5 x 16 weight with a bias: the same as at::linear.
  auto x = torch::randn({2, 16}), weight = torch::randn({5, 16}), bias = torch::randn({5});
  auto y = op("dyrate::decode_linear")
               .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                 const std::optional<at::Tensor>&)>()
               .call(x, weight, bias);
  expect(torch::allclose(y, torch::linear(x, weight, bias), 1e-5, 1e-5), "decode_linear");

  // One query against 3 of a 4-slot cache whose values are the slot numbers; identical keys give
  // uniform attention, so the output is their mean, (0 + 1 + 2) / 3 = 1, whatever slot 3 holds.
  auto keys = torch::ones({1, 1, 4, 8});
  auto values =
      torch::arange(4, torch::kFloat).view({1, 1, 4, 1}).expand({1, 1, 4, 8}).contiguous();
  auto attended = op("dyrate::decode_attention")
                      .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const at::Tensor&, std::optional<double>,
                                        std::optional<int64_t>)>()
                      .call(torch::randn({1, 2, 8}), keys, values, torch::tensor({3}, i64),
                            std::nullopt, std::nullopt);
  expect(torch::allclose(attended, torch::ones({1, 2, 8})), "decode_attention");

  // The decoder's elementwise ops. A row of 2s has RMS 2, so unit weights normalise it to 1s.
  auto unit = torch::ones({4});
  auto normed = op("dyrate::rms_norm")
                    .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double)>()
                    .call(torch::full({1, 4}, 2.0), unit, 0.0);
  expect(torch::allclose(normed, torch::ones({1, 4})), "rms_norm");
  auto [hidden, hidden_normed] =
      op("dyrate::add_rms_norm")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, double)>()
          .call(torch::ones({1, 4}), torch::ones({1, 4}), unit, 0.0);
  expect(torch::allclose(hidden, torch::full({1, 4}, 2.0)) &&
             torch::allclose(hidden_normed, torch::ones({1, 4})),
         "add_rms_norm");
  // silu(1) = 1 / (1 + e^-1) = 0.7310586, times up = 2.
  auto gated = op("dyrate::silu_mul")
                   .typed<at::Tensor(const at::Tensor&)>()
                   .call(torch::tensor({{1.0f, 2.0f}}));
  expect(torch::allclose(gated, torch::tensor({{1.4621172f}})), "silu_mul");
  // A quarter turn (cos 0, sin 1) takes (1, 0) to (0, 1); [1, 1, 1, 2] -> [1, 1, 1, 2].
  auto turned = op("dyrate::rope")
                    .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>()
                    .call(torch::tensor({1.0f, 0.0f}).view({1, 1, 1, 2}), torch::zeros({1, 1, 2}),
                          torch::ones({1, 1, 2}));
  expect(turned.view({-1}).equal(torch::tensor({0.0f, 1.0f})), "rope");

  // A 3-token prompt with identical keys and values 0, 1, 2: token t attends uniformly to
  // tokens 0..t, so its output is their mean, t / 2.
  auto prompt_values = torch::arange(3, torch::kFloat).view({1, 1, 3, 1}).expand({1, 1, 3, 4});
  auto causal = op("dyrate::causal_attention")
                    .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      std::optional<double>)>()
                    .call(torch::randn({1, 2, 3, 4}), torch::ones({1, 1, 3, 4}),
                          prompt_values.contiguous(), std::nullopt);
  auto means = torch::tensor({0.0f, 0.5f, 1.0f}).view({1, 1, 3, 1}).expand({1, 2, 3, 4});
  expect(torch::allclose(causal, means), "causal_attention");
  return failures == 0 ? 0 : 1;
}
