// Published<T>: safe publication of a read-mostly table (RCU style) for tables that a control
// thread updates while worker threads read them (RangeTable, ExceptionTable under steering).
//
// Readers call load() and get a reference-counted pointer to an immutable version; they keep using
// that version for as long as they hold the pointer (one batch), so a reader sees the old table or
// the new one, never a mix, and never blocks a writer. A writer (update / replace) copies the
// current version, changes the copy and publishes it with one atomic pointer store; if the change
// throws, nothing is published. Writers are serialised by a mutex (they never wait for readers).
// A version is freed when its last reader drops it (shared_ptr reference counting), so reclamation
// needs no grace periods or epochs.
//
// Cost: load() is std::atomic<std::shared_ptr>::load (libstdc++: a short spin lock bit plus a
// reference-count increment, tens of ns), so take it once per batch, never per packet. An update
// copies the whole table: O(size), meant for control-plane rates; batch the updates.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>

namespace vnfkit::flow {

template <typename T>
class Published {
 public:
  using Version = std::shared_ptr<const T>;

  Published() : Published(T{}) {}
  explicit Published(T initial) : cur_(std::make_shared<const T>(std::move(initial))) {}
  Published(const Published&) = delete;
  Published& operator=(const Published&) = delete;

  // The current version (never null). Hold it for the duration of one batch.
  [[nodiscard]] Version load() const noexcept { return cur_.load(std::memory_order_acquire); }

  // How many versions have been published after the first one.
  [[nodiscard]] std::uint64_t version() const noexcept { return version_.load(std::memory_order_acquire); }

  // Runs f(T& copy) on a private copy of the current version and publishes the copy when f returns
  // normally; returns what f returns. If f throws, the current version stays as it was.
  template <typename F>
  decltype(auto) update(F&& f) {
    std::lock_guard lock(write_mu_);
    auto next = std::make_shared<T>(*cur_.load(std::memory_order_acquire));
    if constexpr (std::is_void_v<std::invoke_result_t<F&, T&>>) {
      f(*next);
      publish(std::move(next));
    } else {
      auto r = f(*next);
      publish(std::move(next));
      return r;
    }
  }

  // Publishes v as the new version.
  void replace(T v) {
    auto next = std::make_shared<T>(std::move(v));
    std::lock_guard lock(write_mu_);
    publish(std::move(next));
  }

 private:
  void publish(std::shared_ptr<T> next) {
    cur_.store(Version(std::move(next)), std::memory_order_release);
    version_.fetch_add(1, std::memory_order_acq_rel);
  }

  std::atomic<Version> cur_;
  std::atomic<std::uint64_t> version_{0};
  std::mutex write_mu_;
};

}  // namespace vnfkit::flow
