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

// The head's tone rows (g, a, mu, c) of row y for the rule: none for the "blend" head; rows of
// base's channels 1..4 (tone == nullptr); or rows holding the constants tone[0..3] of this image
// (base then holds only the base map), which tone_fill writes into buf at the start of each tile.
struct ToneRows {
    std::vector<float> rows;
};
void tone_fill(const float* tone, int W, ToneRows& buf);
void tone_rows(const RenderModel& m, const float* base, const float* tone, size_t HW, int W, int y,
               ToneRows& buf, const float** rows);

// Threads num_threads resolves to (<= 0: one per usable core; see thread_pool.h).
int resolve_threads(int num_threads);

// Calls tile(thread, b, y0, y1) for every tile of about tile_rows rows (<= 0: chosen from H and
// the thread count) of every image b < B, on the thread pool (thread_pool.h) over tiles;
// thread < resolve_threads(num_threads). An exception in a tile is rethrown as std::bad_alloc.
void parallel_tiles(int64_t B, int H, int tile_rows, int num_threads,
                    const std::function<void(int thread, int64_t b, int y0, int y1)>& tile);

}  // namespace tokfuse
