#include "vnfkit/flow/range_table.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "vnfkit/snapshot/snapshot.hpp"

namespace vnfkit::flow {
namespace {
std::string fmt_range(const Range& r) {
  return "[" + std::to_string(r.lo) + ", " + std::to_string(r.hi) + "]";
}
}  // namespace

void RangeTable::validate(std::span<const Range> ranges) {
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    const Range& r = ranges[i];
    if (r.lo > r.hi) {
      throw std::invalid_argument("ranges: range " + std::to_string(i) + " " + fmt_range(r) +
                                  " is empty (lo > hi)");
    }
    if (r.target == kNoTarget) {
      throw std::invalid_argument("ranges: range " + std::to_string(i) + " has the reserved target 0xFFFFFFFF");
    }
    if (i > 0) {
      const Range& p = ranges[i - 1];
      if (r.lo < p.lo) {
        throw std::invalid_argument("ranges: not sorted: range " + std::to_string(i) + " " + fmt_range(r) +
                                    " starts before range " + std::to_string(i - 1) + " " + fmt_range(p));
      }
      if (r.lo <= p.hi) {
        throw std::invalid_argument("ranges: range " + std::to_string(i) + " " + fmt_range(r) +
                                    " overlaps range " + std::to_string(i - 1) + " " + fmt_range(p));
      }
    }
  }
}

void RangeTable::assign(std::span<const Range> ranges) {
  validate(ranges);
  std::vector<std::uint32_t> lo(ranges.size()), hi(ranges.size()), tg(ranges.size());
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    lo[i] = ranges[i].lo;
    hi[i] = ranges[i].hi;
    tg[i] = ranges[i].target;
  }
  lo_.swap(lo);
  hi_.swap(hi);
  target_.swap(tg);
}

std::size_t RangeTable::index_of(std::uint32_t id) const noexcept {
  std::size_t a = 0, b = lo_.size();
  while (a < b) {  // first range with lo > id
    const std::size_t m = (a + b) / 2;
    if (lo_[m] <= id) a = m + 1; else b = m;
  }
  if (a == 0) return SIZE_MAX;
  return id <= hi_[a - 1] ? a - 1 : SIZE_MAX;
}

std::size_t RangeTable::split(std::uint32_t m, std::uint32_t new_target) {
  if (new_target == kNoTarget) throw std::invalid_argument("target: 0xFFFFFFFF is reserved");
  const std::size_t i = index_of(m);
  if (i == SIZE_MAX) throw std::invalid_argument("split: no range contains " + std::to_string(m));
  if (lo_[i] == m) {
    throw std::invalid_argument("split: " + std::to_string(m) + " is the start of range [" +
                                std::to_string(lo_[i]) + ", " + std::to_string(hi_[i]) +
                                "], so [X, M) would be empty");
  }
  const std::uint32_t hi = hi_[i];
  // resize + move_backward rather than vector::insert (GCC 12 -O3 false stringop-overflow).
  auto open_gap = [i](std::vector<std::uint32_t>& v, std::uint32_t value) {
    v.resize(v.size() + 1);
    std::move_backward(v.begin() + static_cast<std::ptrdiff_t>(i + 1), v.end() - 1, v.end());
    v[i + 1] = value;
  };
  hi_[i] = m - 1;
  open_gap(lo_, m);
  open_gap(hi_, hi);
  open_gap(target_, new_target);
  return i + 1;
}

std::size_t RangeTable::merge(std::uint32_t m, std::uint32_t target) {
  const std::size_t j = index_of(m);
  if (j == SIZE_MAX || lo_[j] != m || j == 0 || hi_[j - 1] + 1 != m) {
    throw std::invalid_argument("merge: " + std::to_string(m) +
                                " is not the boundary between two adjacent ranges");
  }
  const std::size_t i = j - 1;
  hi_[i] = hi_[j];
  if (target != kNoTarget) target_[i] = target;
  const auto pos = static_cast<std::ptrdiff_t>(j);
  lo_.erase(lo_.begin() + pos);
  hi_.erase(hi_.begin() + pos);
  target_.erase(target_.begin() + pos);
  return i;
}

void RangeTable::set_target(std::uint32_t id, std::uint32_t target) {
  if (target == kNoTarget) throw std::invalid_argument("target: 0xFFFFFFFF is reserved");
  const std::size_t i = index_of(id);
  if (i == SIZE_MAX) throw std::invalid_argument("set_target: no range contains " + std::to_string(id));
  target_[i] = target;
}

void RangeTable::lookup(const std::uint32_t* ids, std::size_t n, std::uint32_t* out) const noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = find(ids[i]);
}

std::vector<Range> RangeTable::ranges() const {
  std::vector<Range> r(lo_.size());
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = Range{lo_[i], hi_[i], target_[i]};
  return r;
}

std::vector<std::uint8_t> RangeTable::snapshot() const {
  snapshot::Writer w("range_table");
  auto r = ranges();
  w.put_array<Range>(r);
  return w.finish();
}

RangeTable RangeTable::restore(std::span<const std::uint8_t> image) {
  snapshot::Reader rd(image, "range_table");
  auto r = rd.get_array<Range>();
  rd.expect_end();
  RangeTable t;
  try {
    t.assign(r);
  } catch (const std::invalid_argument& e) {
    throw snapshot::SnapshotError(std::string("range_table snapshot: invalid ranges: ") + e.what());
  }
  return t;
}

}  // namespace vnfkit::flow
