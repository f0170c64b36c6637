#include "vnfkit/classify/reta.hpp"

#include <stdexcept>
#include <string>

namespace vnfkit::classify {

namespace {
inline void store(std::uint16_t& slot, std::uint16_t v) noexcept {
  std::atomic_ref<std::uint16_t>(slot).store(v, std::memory_order_relaxed);
}
}  // namespace

Reta::Reta(std::size_t size, std::size_t num_queues) {
  if (size == 0 || size > kMaxRetaSize || (size & (size - 1)) != 0) {
    throw std::invalid_argument("reta_size: must be a power of two in 1..65536, got " +
                                std::to_string(size));
  }
  if (num_queues == 0 || num_queues > kMaxQueues) {
    throw std::invalid_argument("num_queues: must be in 1..1024, got " + std::to_string(num_queues));
  }
  table_.assign(size, 0);
  mask_ = static_cast<std::uint32_t>(size - 1);
  num_queues_ = num_queues;
  fill_round_robin();
}

std::uint16_t Reta::get(std::size_t index) const {
  if (index >= table_.size()) {
    throw std::out_of_range("reta index " + std::to_string(index) + " out of range (size " +
                            std::to_string(table_.size()) + ")");
  }
  return std::atomic_ref<std::uint16_t>(const_cast<std::uint16_t&>(table_[index])).load(std::memory_order_relaxed);
}

void Reta::set(std::size_t index, std::size_t queue) {
  if (index >= table_.size()) {
    throw std::invalid_argument("reta index: " + std::to_string(index) + " out of range (size " +
                                std::to_string(table_.size()) + ")");
  }
  if (queue >= num_queues_) {
    throw std::invalid_argument("reta entry: queue " + std::to_string(queue) +
                                " must be < num_queues (" + std::to_string(num_queues_) + ")");
  }
  store(table_[index], static_cast<std::uint16_t>(queue));
}

void Reta::assign(std::span<const std::uint16_t> table) {
  if (table.size() != table_.size()) {
    throw std::invalid_argument("reta table: expected " + std::to_string(table_.size()) +
                                " entries, got " + std::to_string(table.size()));
  }
  for (std::size_t i = 0; i < table.size(); ++i) {
    if (table[i] >= num_queues_) {
      throw std::invalid_argument("reta entry " + std::to_string(i) + ": queue " +
                                  std::to_string(table[i]) + " must be < num_queues (" +
                                  std::to_string(num_queues_) + ")");
    }
  }
  for (std::size_t i = 0; i < table.size(); ++i) store(table_[i], table[i]);
}

void Reta::fill_round_robin() noexcept {
  for (std::size_t i = 0; i < table_.size(); ++i) {
    store(table_[i], static_cast<std::uint16_t>(i % num_queues_));
  }
}

void Reta::copy_to(std::uint16_t* out) const noexcept {
  for (std::size_t i = 0; i < table_.size(); ++i) {
    out[i] = std::atomic_ref<std::uint16_t>(const_cast<std::uint16_t&>(table_[i])).load(std::memory_order_relaxed);
  }
}

}  // namespace vnfkit::classify
