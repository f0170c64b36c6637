#include "vnfkit/ftlog/replay.hpp"

#include <algorithm>
#include <string>
#include <unordered_set>

namespace vnfkit::ftlog {

namespace {

// Hash of a vector of per-thread positions (the search state; the value is determined by it).
struct PositionsHash {
  std::size_t operator()(const std::vector<std::size_t>& p) const noexcept {
    std::uint64_t h = 0x9E3779B97F4A7C15ull;
    for (std::size_t x : p) {
      h ^= static_cast<std::uint64_t>(x) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    }
    return static_cast<std::size_t>(h);
  }
};

}  // namespace

ChainResult check_chain(std::uint64_t start, std::uint64_t final, std::span<const std::vector<ChainStep>> threads,
                        std::size_t max_states) {
  ChainResult res;
  const std::size_t nt = threads.size();
  for (const auto& t : threads) res.total += t.size();
  res.stuck_at = start;

  // Depth-first search over orders. A frame is a state (positions, value) plus the threads whose
  // next step changes the value and saw it (the choices), and which choice is being tried.
  struct Frame {
    std::vector<std::size_t> pos;
    std::uint64_t value;
    std::size_t placed;
    std::vector<std::size_t> choices;
    std::size_t next = 0;
  };
  std::unordered_set<std::vector<std::size_t>, PositionsHash> dead;
  std::vector<Frame> stack;

  // Place every value-preserving step that is next in its thread, then list the choices.
  auto settle = [&](Frame& f) {
    for (bool moved = true; moved;) {
      moved = false;
      for (std::size_t t = 0; t < nt; ++t) {
        while (f.pos[t] < threads[t].size() && threads[t][f.pos[t]].before == f.value &&
               threads[t][f.pos[t]].after == f.value) {
          ++f.pos[t];
          ++f.placed;
          moved = true;
        }
      }
    }
    f.choices.clear();
    for (std::size_t t = 0; t < nt; ++t) {
      if (f.pos[t] < threads[t].size() && threads[t][f.pos[t]].before == f.value) f.choices.push_back(t);
    }
    if (f.choices.size() > 1) {
      // Try first the move that leaves the most threads able to move next (its own next step
      // included): dead ends are states where no thread's next access saw the value.
      auto options_after = [&](std::size_t t) {
        const std::uint64_t w = threads[t][f.pos[t]].after;
        std::size_t k = 0;
        for (std::size_t u = 0; u < nt; ++u) {
          const std::size_t p = f.pos[u] + (u == t ? 1 : 0);
          if (p < threads[u].size() && threads[u][p].before == w) ++k;
        }
        return k;
      };
      std::vector<std::pair<std::size_t, std::size_t>> scored;
      for (std::size_t t : f.choices) scored.emplace_back(options_after(t), t);
      std::stable_sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
      for (std::size_t i = 0; i < scored.size(); ++i) f.choices[i] = scored[i].second;
    }
    if (f.placed > res.placed) {
      res.placed = f.placed;
      res.stuck_at = f.value;
    }
  };

  Frame root{std::vector<std::size_t>(nt, 0), start, 0, {}, 0};
  settle(root);
  stack.push_back(std::move(root));
  std::size_t branches = 0;
  auto is_dead = [&](const std::vector<std::size_t>& pos) { return !dead.empty() && dead.count(pos) != 0; };
  while (!stack.empty()) {
    Frame& f = stack.back();
    if (f.placed == res.total) {
      if (f.value == final) {
        res.ok = true;
        return res;
      }
      dead.insert(f.pos);
      stack.pop_back();
      continue;
    }
    if (f.choices.size() == 1) {  // a forced step: advance this frame in place
      const std::size_t t = f.choices[0];
      f.value = threads[t][f.pos[t]].after;
      ++f.pos[t];
      ++f.placed;
      settle(f);
      if (is_dead(f.pos)) stack.pop_back();
      continue;
    }
    if (f.next >= f.choices.size()) {  // no step saw this value, or every choice failed
      dead.insert(f.pos);
      stack.pop_back();
      continue;
    }
    if (++branches > max_states) {
      res.gave_up = true;
      return res;
    }
    const std::size_t t = f.choices[f.next++];
    Frame child{f.pos, threads[t][f.pos[t]].after, f.placed + 1, {}, 0};
    ++child.pos[t];
    settle(child);
    if (!is_dead(child.pos)) stack.push_back(std::move(child));
  }
  return res;
}

bool check_chain_multiset(std::uint64_t start, std::uint64_t final, std::span<const std::vector<ChainStep>> threads) {
  std::vector<std::uint64_t> befores{final}, afters{start}, seen;
  for (const auto& t : threads) {
    for (const ChainStep& s : t) {
      if (s.before == s.after) {
        seen.push_back(s.before);
      } else {
        befores.push_back(s.before);
        afters.push_back(s.after);
      }
    }
  }
  std::sort(befores.begin(), befores.end());
  std::sort(afters.begin(), afters.end());
  if (befores != afters) return false;
  return std::all_of(seen.begin(), seen.end(),
                     [&](std::uint64_t v) { return std::binary_search(afters.begin(), afters.end(), v); });
}

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
      if (o.object >= per.size()) continue;
      per[o.object].push_back(o);
      per[o.object].back().thread = t;  // in this thread's program order
    }
  }
  for (std::size_t i = 0; i < per.size(); ++i) state_->object(i)->replay_finish(per[i]);
  finished_ = true;
}

}  // namespace vnfkit::ftlog
