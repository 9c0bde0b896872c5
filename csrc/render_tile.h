// Shared parts of the fused render's drivers (render_cpu.cpp: float32, render_int8.cpp: int8).
// Baseline ISA only: included by files compiled without -mavx* flags.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "render.h"

namespace tokfuse {

// "layers" head: the base layers (two separable box passes of radius R, replicate padding) of ir
// and vis for output rows [y0, y1), computed from the 4R source rows around them. Returns
// lo[2][y1 - y0][W] (ir, then vis), stored in s.
struct LayerBufs {
    std::vector<float> b1, b2, b3, lo, tmp;
    std::vector<const float*> rows;
};
const float* base_layers_tile(const float* ir, const float* vis, int H, int W, int R, int y0,
                              int y1, LayerBufs& s);

// The head's rule over the rows [y0, y1) of one tile: the RuleRow fields that stay the same from
// row to row, the tile's base layers ("layers" head: base_layers_tile) and the tone rows (g, a, mu,
// c): none for the "blend" head; base's channels 1..4 (tone == nullptr); or, with tone (this
// image's four constants; base then holds only the base map), rows filled with them once per tile.
struct TileRule {
    RuleRow rr{};
    LayerBufs layers;
    std::vector<float> tone_rows;
    const RenderModel* m = nullptr;
    const float *ir = nullptr, *vis = nullptr, *base = nullptr, *tone = nullptr, *lo = nullptr;
    float* out = nullptr;
    size_t HW = 0;
    int y0 = 0, T = 0;
};
// Sets r up for a tile of image planes ir, vis, base, out (H x W). h: the head features (hplane >
// 0: channel-planar, hplane floats per channel; else hstride floats per pixel).
void tile_rule_begin(TileRule& r, const RenderModel& m, const float* ir, const float* vis,
                     const float* base, const float* tone, int H, int W, int y0, int y1, float* out,
                     const float* h, int hstride, int hplane);
// r.rr with its per-row inputs at row y (y0 <= y < y1), for the rule kernel.
const RuleRow& tile_rule_row(TileRule& r, int y);

// Ring buffers three rows high: the slot of row r (r may be negative).
inline int ring(int r) { return ((r % 3) + 3) % 3; }

// Threads num_threads resolves to (<= 0: one per usable core; see thread_pool.h).
int resolve_threads(int num_threads);

// Calls tile(thread, b, y0, y1) for every tile of about tile_rows rows (<= 0: chosen from H and
// the thread count) of every image b < B, on the thread pool (thread_pool.h) over tiles;
// thread < resolve_threads(num_threads). An exception in a tile is rethrown as std::bad_alloc.
void parallel_tiles(int64_t B, int H, int tile_rows, int num_threads,
                    const std::function<void(int thread, int64_t b, int y0, int y1)>& tile);

}  // namespace tokfuse
