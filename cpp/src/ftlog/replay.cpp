#include "vnfkit/ftlog/replay.hpp"

#include <algorithm>
#include <string>

namespace vnfkit::ftlog {

Replayer::Replayer(std::shared_ptr<state::SharedState> st, std::vector<Chunk> chunks,
                   std::map<std::uint16_t, std::uint64_t> start_positions)
    : state_(std::move(st)) {
  if (!state_) throw std::invalid_argument("state: required");
  std::map<std::uint16_t, std::vector<Chunk*>> by_thread;
  for (auto& c : chunks) by_thread[c.thread].push_back(&c);
  for (auto& [t, start] : start_positions) by_thread[t];  // threads expected even with no chunk
  for (auto& [t, list] : by_thread) {
    std::stable_sort(list.begin(), list.end(), [](const Chunk* a, const Chunk* b) { return a->first_position < b->first_position; });
    // Drop empty chunks, then require contiguity from the expected start.
    std::vector<Determinant> records;
    const auto it = start_positions.find(t);
    std::uint64_t first = it != start_positions.end() ? it->second : (list.empty() ? 0 : list.front()->first_position);
    std::uint64_t next = first;
    for (const Chunk* c : list) {
      if (c->records.empty()) continue;
      if (c->first_position != next) {
        throw DivergenceError("determinant log of thread " + std::to_string(t) + ": records [" + std::to_string(next) +
                              ", " + std::to_string(c->first_position) + ") are missing (gap or duplicate chunk)");
      }
      const std::size_t at = records.size();
      records.resize(at + c->records.size());
      std::copy(c->records.begin(), c->records.end(), records.begin() + static_cast<std::ptrdiff_t>(at));
      next += c->records.size();
    }
    auto ctx = state_->make_replay_context(t);
    ctx->set_replay_log(std::move(records), first);
    contexts_[t] = std::move(ctx);
  }
  for (std::size_t i = 0; i < state_->size(); ++i) state_->object(i)->replay_begin();
}

std::vector<std::uint16_t> Replayer::threads() const {
  std::vector<std::uint16_t> t;
  for (const auto& [k, v] : contexts_) t.push_back(k);
  return t;
}

std::shared_ptr<state::Context> Replayer::context(std::uint16_t thread) {
  if (finished_) throw std::invalid_argument("replayer: already finished");
  auto& c = contexts_[thread];
  if (!c) {
    c = state_->make_replay_context(thread);
    c->set_replay_log({}, 0);
  }
  return c;
}

void Replayer::finish() {
  if (finished_) throw std::invalid_argument("replayer: already finished");
  for (const auto& [t, c] : contexts_) {
    if (const Determinant* r = c->replay_peek()) {
      c->diverge(*r, "the log holds " + std::to_string(c->replay_remaining()) +
                         " record(s) the replayed execution never asked for, starting here");
    }
  }
  std::vector<std::vector<state::Observation>> per(state_->size());
  for (const auto& [t, c] : contexts_) {
    for (const auto& o : c->observations()) {
      if (o.object < per.size()) per[o.object].push_back(o);
    }
  }
  for (std::size_t i = 0; i < per.size(); ++i) state_->object(i)->replay_finish(per[i]);
  finished_ = true;
}

}  // namespace vnfkit::ftlog
