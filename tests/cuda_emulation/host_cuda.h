// A host emulation of the CUDA execution model, for running the CuPy backend's kernels with g++.
//
// Included before a CUDA source (kernels.cuda_source(family)), it lets g++ compile that source
// unchanged and host_module.py launch its kernels through ctypes. Every CUDA thread of a block is
// a cooperative user-level thread (a fiber: its own stack, entered with makecontext/setcontext and
// switched with _setjmp/_longjmp, or with swapcontext when HOST_CUDA_SWAPCONTEXT is defined). A
// fiber runs until it reaches a __syncthreads, a warp intrinsic or its end, and a scheduler then
// picks the next runnable thread in the order a launch asks for: forward (lowest thread first),
// reverse, or shuffled from a seed. So a missing barrier or a race between threads changes the
// results between orders, while a correct kernel gives the same bits under all of them.
//
// Blocks run one after another (in forward, reverse or shuffled order as well). __shared__
// variables are the kernels' function-local statics: one object seen by every thread of the block
// that runs, and filled with 0xFF bytes (NaN for floats, -1 for integers) before each block, as
// shared memory holds garbage when a block starts. The build links them into one section
// (host_cuda_shared.ld), which is how the emulator finds them.
//
// What is checked, as a GPU would fail or a careful reading of the CUDA programming guide requires:
// every live thread of the block reaches the same __syncthreads (a barrier in divergent code, or
// one that a thread of the block has left, is reported instead of hanging); every lane named in a
// warp intrinsic's mask is alive and calls the same intrinsic at the same line; a deadlock (all
// threads waiting, no exchange able to complete) is reported. Kernels see threadIdx, blockIdx,
// blockDim and gridDim as unsigned ints, as in CUDA.
//
// Not emulated: the memory model beyond these synchronisations (every write is visible at once),
// dynamic shared memory (extern __shared__), textures, cooperative groups, clusters, and device
// math's own rounding (the host's libm and IEEE arithmetic are used, without FMA contraction).
#pragma once

#include <math.h>

#include <cmath>
#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <ucontext.h>

// ------------------------------------------------------------------------------ CUDA keywords

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One object per kernel instantiation; blocks run one at a time, so it is the running block's.
#define __shared__ static
// __restrict__ is a g++ keyword already, with the same meaning.

// The bounds of the __shared__ variables, set by the linker script host_module.py links with (null
// where there is none).
extern "C" char __start_host_cuda_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_host_cuda_shared[] __attribute__((weak, visibility("hidden")));

namespace host_cuda {

struct uint3 {
    unsigned int x, y, z;
};
typedef uint3 dim3;

enum State { NOT_STARTED, RUNNING, RUNNABLE, AT_BARRIER, AT_WARP, DONE };
enum Order { FORWARD = 0, REVERSE = 1, SHUFFLED = 2 };
enum Exchange { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR, SYNCWARP };

struct Fiber;

struct Thread {
    uint3 idx;
    int linear;
    State state;
    Fiber* fiber;
};

struct Fiber {
    jmp_buf jb;
    ucontext_t uc;
    void* memory;
    size_t size;
    bool fresh;  // never entered since (re)initialisation: start it with setcontext
};

struct Warp {
    unsigned alive;    // lanes that exist and have not returned
    unsigned arrived;  // lanes waiting in the current exchange
    unsigned mask;
    int line, kind, width, bytes;
    int argument[32];
    unsigned char value[32][8];
    unsigned char result[32][8];
};

// The launch being run; one at a time (launch() holds a lock).
struct Launch {
    void (*body)(void**);
    void** args;
    uint3 grid, block;
    int thread_order, block_order;
    unsigned long long rng;
    std::vector<Thread> threads;
    std::vector<Warp> warps;
    std::vector<unsigned long long> runnable;  // bitset over threads
    int live, count;
    int barrier_arrived, barrier_line;
    Thread* handoff;  // the thread a fiber must start next
    bool failed;
    std::string error;
};

inline Launch g_launch;
inline Thread* g_current = nullptr;
inline uint3 g_block_idx, g_block_dim, g_grid_dim;
inline Fiber g_main;
inline std::vector<Fiber*> g_free;  // fibers not running a thread
inline std::vector<Fiber*> g_all;
inline std::mutex g_lock;
inline const size_t STACK_BYTES = 256 * 1024;

[[noreturn]] void fail(const std::string& message);

// ------------------------------------------------------------------------------ scheduling

inline unsigned long long next_random() {  // splitmix64
    unsigned long long z = (g_launch.rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

inline void make_runnable(Thread* t, State state) {
    t->state = state;
    g_launch.runnable[t->linear >> 6] |= 1ull << (t->linear & 63);
}

// The next thread to run in the launch's order, taken off the runnable set; nullptr if none.
inline Thread* pick() {
    Launch& L = g_launch;
    const int words = (int)L.runnable.size();
    int chosen = -1;
    if (L.thread_order == FORWARD) {
        for (int w = 0; w < words && chosen < 0; ++w)
            if (L.runnable[w]) chosen = w * 64 + __builtin_ctzll(L.runnable[w]);
    } else if (L.thread_order == REVERSE) {
        for (int w = words - 1; w >= 0 && chosen < 0; --w)
            if (L.runnable[w]) chosen = w * 64 + 63 - __builtin_clzll(L.runnable[w]);
    } else {
        int total = 0;
        for (int w = 0; w < words; ++w) total += __builtin_popcountll(L.runnable[w]);
        if (total) {
            int k = (int)(next_random() % (unsigned long long)total);
            for (int w = 0; w < words && chosen < 0; ++w) {
                const int here = __builtin_popcountll(L.runnable[w]);
                if (k >= here) {
                    k -= here;
                    continue;
                }
                unsigned long long bits = L.runnable[w];
                for (; k > 0; --k) bits &= bits - 1;
                chosen = w * 64 + __builtin_ctzll(bits);
            }
        }
    }
    if (chosen < 0) return nullptr;
    L.runnable[chosen >> 6] &= ~(1ull << (chosen & 63));
    return &L.threads[chosen];
}

extern "C" inline void fiber_entry();

inline void reset_fiber(Fiber* f) {
    const size_t guard = 4096;
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = (char*)f->memory + guard;
    f->uc.uc_stack.ss_size = f->size - guard;
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, (void (*)())fiber_entry, 0);
    f->fresh = true;
}

inline Fiber* take_fiber() {
    if (!g_free.empty()) {
        Fiber* f = g_free.back();
        g_free.pop_back();
        return f;
    }
    Fiber* f = new Fiber();
    const size_t guard = 4096;
    f->size = STACK_BYTES + guard;
    f->memory = mmap(nullptr, f->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (f->memory == MAP_FAILED) {
        std::fprintf(stderr, "host_cuda: cannot map a fiber stack\n");
        std::abort();
    }
    mprotect(f->memory, guard, PROT_NONE);  // a stack overflow faults instead of corrupting memory
    reset_fiber(f);
    g_all.push_back(f);
    return f;
}

inline Fiber* g_starting = nullptr;

// Leave `from` (its state saved in it) for `to`.
inline void switch_to(Fiber* from, Fiber* to) {
#ifdef HOST_CUDA_SWAPCONTEXT
    if (to->fresh) {
        to->fresh = false;
        g_starting = to;
    }
    swapcontext(&from->uc, &to->uc);
#else
    if (_setjmp(from->jb) == 0) {
        if (to->fresh) {
            to->fresh = false;
            g_starting = to;
            setcontext(&to->uc);
        }
        _longjmp(to->jb, 1);
    }
#endif
}


// Switch from the running thread ``me`` to ``next`` (starting it on a fresh fiber when it has not
// run yet); returns when the scheduler picks ``me`` again.
inline void run_instead(Thread* me, Thread* next) {
    if (next->state == NOT_STARTED) {
        g_launch.handoff = next;
        switch_to(me->fiber, take_fiber());
    } else {
        next->state = RUNNING;
        g_current = next;
        switch_to(me->fiber, next->fiber);
    }
    g_current = me;
    me->state = RUNNING;
}

// The running thread cannot go on (it waits at a barrier or an exchange): run another.
inline void block_current() {
    Thread* me = g_current;
    Thread* next = pick();
    if (next == nullptr) {
        std::string waiting;
        for (const Thread& t : g_launch.threads)
            if (t.state == AT_BARRIER || t.state == AT_WARP)
                waiting += " " + std::to_string(t.linear) + (t.state == AT_BARRIER ? "@syncthreads" : "@warp");
        fail("deadlock: no thread of the block can run; waiting:" + waiting.substr(0, 400));
    }
    run_instead(me, next);
}

// In shuffled order, let another runnable thread go first now and then (more interleavings).
inline void maybe_yield() {
    if (g_launch.thread_order != SHUFFLED || (next_random() & 3) != 0) return;
    Thread* me = g_current;
    make_runnable(me, RUNNABLE);
    Thread* next = pick();
    if (next == me) {
        me->state = RUNNING;
        return;
    }
    run_instead(me, next);
}

inline std::string where(const Thread* t) {
    char text[160];
    std::snprintf(text, sizeof text, "block (%u, %u, %u), thread (%u, %u, %u)", g_block_idx.x, g_block_idx.y,
                  g_block_idx.z, t->idx.x, t->idx.y, t->idx.z);
    return text;
}

[[noreturn]] inline void fail(const std::string& message) {
    Launch& L = g_launch;
    L.failed = true;
    L.error = (g_current ? where(g_current) + ": " : std::string()) + message;
    switch_to(g_current->fiber, &g_main);
    std::abort();  // never resumed
}

inline void check_barrier_complete();

// The running thread has returned from the kernel: start or resume the next one.
inline void thread_exit(Fiber* self) {
    Launch& L = g_launch;
    Thread* me = g_current;
    me->state = DONE;
    --L.live;
    // A warp exchange that waits for this lane can never complete.
    Warp& w = L.warps[me->linear >> 5];
    const unsigned bit = 1u << (me->linear & 31);
    w.alive &= ~bit;
    if (w.arrived && (w.mask & bit))
        fail("returned while lanes of its warp wait for it in a warp intrinsic (line " +
             std::to_string(w.line) + ")");
    if (L.barrier_arrived)
        fail("returned while other threads of the block wait at __syncthreads (line " +
             std::to_string(L.barrier_line) + "): the barrier is in divergent code");
    Thread* next = pick();
    if (next == nullptr) {
        if (L.live != 0) fail("deadlock after a thread returned");
        g_free.push_back(self);
        g_current = nullptr;
        switch_to(self, &g_main);  // the block is done; resumed later with a new thread to start
        return;
    }
    if (next->state == NOT_STARTED) {
        L.handoff = next;  // this fiber starts it
        return;
    }
    g_free.push_back(self);
    next->state = RUNNING;
    g_current = next;
    switch_to(self, next->fiber);
}

extern "C" inline void fiber_entry() {
    Fiber* self = g_starting;
    for (;;) {
        Thread* t = g_launch.handoff;
        g_launch.handoff = nullptr;
        t->fiber = self;
        t->state = RUNNING;
        g_current = t;
        g_launch.body(g_launch.args);
        thread_exit(self);
    }
}

// ------------------------------------------------------------------------------ barriers and warps

inline void syncthreads(int line) {
    Launch& L = g_launch;
    Thread* me = g_current;
    if (L.live != L.count)
        fail("__syncthreads at line " + std::to_string(line) + " after " + std::to_string(L.count - L.live) +
             " threads of the block returned: the barrier is in divergent code");
    if (L.barrier_arrived == 0) L.barrier_line = line;
    else if (L.barrier_line != line)
        fail("__syncthreads at line " + std::to_string(line) + " while others wait at line " +
             std::to_string(L.barrier_line) + ": a barrier in divergent code");
    if (++L.barrier_arrived == L.live) {
        L.barrier_arrived = 0;
        for (Thread& t : L.threads)
            if (t.state == AT_BARRIER) make_runnable(&t, RUNNABLE);
        maybe_yield();
        return;
    }
    me->state = AT_BARRIER;
    block_current();
}

inline int source_lane(int kind, int lane, int argument, int width) {
    const int first = lane & ~(width - 1), last = first + width - 1;
    switch (kind) {
        case SHFL_IDX: return first + (argument & (width - 1));
        case SHFL_UP: return lane - argument < first ? lane : lane - argument;
        case SHFL_DOWN: return lane + argument > last ? lane : lane + argument;
        case SHFL_XOR: {
            const int j = lane ^ argument;
            return j > last ? lane : j;
        }
        default: return lane;
    }
}

// (No function-local statics in this header: the linker script takes those for __shared__ variables.)
inline const char* const names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                                    "__syncwarp"};

// One warp-wide exchange: every lane of `mask` arrives, then each reads the value of its source lane.
template <typename T>
inline T exchange(int line, int kind, unsigned mask, T value, int argument, int width) {
    static_assert(sizeof(T) <= 8, "warp intrinsics exchange values of at most 8 bytes");
    Launch& L = g_launch;
    Thread* me = g_current;
    const int lane = me->linear & 31, warp = me->linear >> 5;
    Warp& w = L.warps[warp];
    if (!(mask >> lane & 1u))
        fail(std::string(names[kind]) + " with a mask that leaves out the calling lane " + std::to_string(lane));
    if (width < 1 || width > 32 || (width & (width - 1)))
        fail(std::string(names[kind]) + " with width " + std::to_string(width) + " (a power of 2 up to 32)");
    const unsigned missing = mask & ~w.alive;
    if (missing) {
        char text[64];
        std::snprintf(text, sizeof text, "0x%08x", missing);
        fail(std::string(names[kind]) + " names lanes " + text + " that do not exist or have returned");
    }
    if (w.arrived == 0) {
        w.mask = mask;
        w.line = line;
        w.kind = kind;
        w.width = width;
        w.bytes = (int)sizeof(T);
    } else if (w.mask != mask || w.line != line || w.kind != kind || w.width != width ||
               w.bytes != (int)sizeof(T)) {
        fail(std::string(names[kind]) + " at line " + std::to_string(line) + " while lanes of the warp wait in " +
             names[w.kind] + " at line " + std::to_string(w.line) + " (or with another mask, width or type)");
    }
    std::memcpy(w.value[lane], &value, sizeof(T));
    w.argument[lane] = argument;
    w.arrived |= 1u << lane;
    if (w.arrived == mask) {  // the last lane: hand every lane its source's value
        for (int l = 0; l < 32; ++l) {
            if (!(mask >> l & 1u)) continue;
            const int source = source_lane(kind, l, w.argument[l], width);
            if (mask >> source & 1u) std::memcpy(w.result[l], w.value[source], sizeof(T));
            else std::memset(w.result[l], 0xFF, sizeof(T));  // an inactive source lane: undefined
        }
        w.arrived = 0;
        for (int l = 0; l < 32; ++l)
            if ((mask >> l & 1u) && l != lane) make_runnable(&L.threads[warp * 32 + l], RUNNABLE);
        maybe_yield();
    } else {
        me->state = AT_WARP;
        block_current();
    }
    T out;
    std::memcpy(&out, w.result[lane], sizeof(T));
    return out;
}

// ------------------------------------------------------------------------------ launching

struct Config {
    unsigned grid[3], block[3];
    int thread_order, block_order;
    unsigned long long seed;
};

inline void run_block(const Config& c, uint3 block_idx) {
    Launch& L = g_launch;
    g_block_idx = block_idx;
    for (int i = 0; i < L.count; ++i) {
        Thread& t = L.threads[i];
        t.idx = {(unsigned)i % c.block[0], (unsigned)i / c.block[0] % c.block[1],
                 (unsigned)i / (c.block[0] * c.block[1])};
        t.linear = i;
        t.state = NOT_STARTED;
        t.fiber = nullptr;
    }
    for (int w = 0; w < (int)L.warps.size(); ++w) {
        const int lanes = L.count - 32 * w;
        L.warps[w].alive = lanes >= 32 ? 0xffffffffu : (1u << lanes) - 1;
        L.warps[w].arrived = 0;
    }
    for (int i = 0; i < (int)L.runnable.size(); ++i) L.runnable[i] = 0;
    for (int i = 0; i < L.count; ++i) L.runnable[i >> 6] |= 1ull << (i & 63);
    L.live = L.count;
    L.barrier_arrived = 0;
    if (__start_host_cuda_shared != __stop_host_cuda_shared)
        std::memset(__start_host_cuda_shared, 0xFF, __stop_host_cuda_shared - __start_host_cuda_shared);
    L.handoff = pick();
    g_current = nullptr;
    switch_to(&g_main, take_fiber());
}

// Runs the kernel `body` (which unpacks `args`) on the grid of `c`; returns 0, or 1 with `error` set.
inline int launch(const Config* c, void (*body)(void**), void** args, char* error, int error_size) {
    std::lock_guard<std::mutex> hold(g_lock);
    Launch& L = g_launch;
    L.body = body;
    L.args = args;
    L.thread_order = c->thread_order;
    L.block_order = c->block_order;
    L.rng = c->seed;
    L.failed = false;
    L.error.clear();
    L.count = (int)(c->block[0] * c->block[1] * c->block[2]);
    L.threads.assign(L.count, Thread());
    L.warps.assign((L.count + 31) / 32, Warp());
    L.runnable.assign((L.count + 63) / 64, 0ull);
    g_block_dim = {c->block[0], c->block[1], c->block[2]};
    g_grid_dim = {c->grid[0], c->grid[1], c->grid[2]};
    const unsigned long long blocks = (unsigned long long)c->grid[0] * c->grid[1] * c->grid[2];
    std::vector<unsigned long long> order(blocks);
    for (unsigned long long b = 0; b < blocks; ++b) order[b] = b;
    if (c->block_order == REVERSE) {
        for (unsigned long long b = 0; b < blocks / 2; ++b) std::swap(order[b], order[blocks - 1 - b]);
    } else if (c->block_order == SHUFFLED) {
        for (unsigned long long b = blocks; b > 1; --b) std::swap(order[b - 1], order[next_random() % b]);
    }
    for (unsigned long long b : order) {
        const uint3 idx = {(unsigned)(b % c->grid[0]), (unsigned)(b / c->grid[0] % c->grid[1]),
                           (unsigned)(b / ((unsigned long long)c->grid[0] * c->grid[1]))};
        run_block(*c, idx);
        if (L.failed) {
            for (Fiber* f : g_all) reset_fiber(f);  // abandon the stacks of the failed block
            g_free.assign(g_all.begin(), g_all.end());
            std::snprintf(error, error_size, "%s", L.error.c_str());
            return 1;
        }
    }
    return 0;
}

// ------------------------------------------------------------------------------ kernel signatures

template <typename T> struct TypeName;
#define HOST_CUDA_TYPE(type)                                      \
    template <> struct TypeName<type> {                           \
        static std::string get() { return #type; }                \
    };
HOST_CUDA_TYPE(void)
HOST_CUDA_TYPE(bool)
HOST_CUDA_TYPE(char)
HOST_CUDA_TYPE(signed char)
HOST_CUDA_TYPE(unsigned char)
HOST_CUDA_TYPE(short)
HOST_CUDA_TYPE(unsigned short)
HOST_CUDA_TYPE(int)
HOST_CUDA_TYPE(unsigned int)
HOST_CUDA_TYPE(long)
HOST_CUDA_TYPE(unsigned long)
HOST_CUDA_TYPE(long long)
HOST_CUDA_TYPE(unsigned long long)
HOST_CUDA_TYPE(float)
HOST_CUDA_TYPE(double)
#undef HOST_CUDA_TYPE
template <typename T> struct TypeName<const T> {
    static std::string get() { return "const " + TypeName<T>::get(); }
};
template <typename T> struct TypeName<T*> {
    static std::string get() { return TypeName<T>::get() + "*"; }
};

// "float*,const long long*,int,..." for a kernel's parameters.
template <typename... A> inline std::string signature(void (*)(A...)) {
    std::string text;
    ((text += TypeName<A>::get() + ","), ...);
    if (!text.empty()) text.pop_back();
    return text;
}

template <typename... A, size_t... I>
inline void call(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

// Calls f with its arguments read from args[i], each pointing at the argument's bytes (as CUDA's
// kernelParams do).
template <typename... A> inline void apply(void (*f)(A...), void** args) {
    call(f, args, std::index_sequence_for<A...>{});
}

// ------------------------------------------------------------------------------ device functions

template <typename T> inline T shfl_sync(int line, unsigned mask, T v, int lane, int width = 32) {
    return exchange(line, SHFL_IDX, mask, v, lane, width);
}
template <typename T> inline T shfl_up_sync(int line, unsigned mask, T v, unsigned delta, int width = 32) {
    return exchange(line, SHFL_UP, mask, v, (int)delta, width);
}
template <typename T> inline T shfl_down_sync(int line, unsigned mask, T v, unsigned delta, int width = 32) {
    return exchange(line, SHFL_DOWN, mask, v, (int)delta, width);
}
template <typename T> inline T shfl_xor_sync(int line, unsigned mask, T v, int lane_mask, int width = 32) {
    return exchange(line, SHFL_XOR, mask, v, lane_mask, width);
}
inline void syncwarp(int line, unsigned mask = 0xffffffffu) { exchange(line, SYNCWARP, mask, 0, 0, 32); }

template <typename T> inline T atomic_add(T* address, T value) {
    const T old = *address;
    *address = old + value;
    maybe_yield();
    return old;
}
template <typename T> inline T atomic_cas(T* address, T compare, T value) {
    const T old = *address;
    if (old == compare) *address = value;
    maybe_yield();
    return old;
}
template <typename T> inline T atomic_exch(T* address, T value) {
    const T old = *address;
    *address = value;
    maybe_yield();
    return old;
}
template <typename T> inline T atomic_max(T* address, T value) {
    const T old = *address;
    if (value > old) *address = value;
    maybe_yield();
    return old;
}
template <typename T> inline T atomic_min(T* address, T value) {
    const T old = *address;
    if (value < old) *address = value;
    maybe_yield();
    return old;
}

template <typename To, typename From> inline To bit_cast(From from) {
    static_assert(sizeof(To) == sizeof(From), "a bit cast keeps the size");
    To to;
    std::memcpy(&to, &from, sizeof to);
    return to;
}

[[noreturn]] inline void device_assert(const char* expression, const char* file, int line) {
    fail(std::string("device assert failed: ") + expression + " (" + file + ":" + std::to_string(line) + ")");
}

}  // namespace host_cuda

using host_cuda::dim3;
using host_cuda::uint3;

#define threadIdx (static_cast<const ::host_cuda::uint3&>(::host_cuda::g_current->idx))
#define blockIdx (static_cast<const ::host_cuda::uint3&>(::host_cuda::g_block_idx))
#define blockDim (static_cast<const ::host_cuda::dim3&>(::host_cuda::g_block_dim))
#define gridDim (static_cast<const ::host_cuda::dim3&>(::host_cuda::g_grid_dim))
#define warpSize 32

#define __syncthreads() ::host_cuda::syncthreads(__LINE__)
#define __syncwarp(...) ::host_cuda::syncwarp(__LINE__, ##__VA_ARGS__)
#define __shfl_sync(...) ::host_cuda::shfl_sync(__LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::host_cuda::shfl_up_sync(__LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::host_cuda::shfl_down_sync(__LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::host_cuda::shfl_xor_sync(__LINE__, __VA_ARGS__)
#define __threadfence() ((void)0)
#define __threadfence_block() ((void)0)
#define __trap() ::host_cuda::fail("__trap()")
#undef assert
#define assert(e) ((e) ? (void)0 : ::host_cuda::device_assert(#e, __FILE__, __LINE__))

// Atomics of the types CUDA has them for (double atomicAdd: compute capability 6.0 and later).
inline int atomicAdd(int* a, int v) { return host_cuda::atomic_add(a, v); }
inline unsigned int atomicAdd(unsigned int* a, unsigned int v) { return host_cuda::atomic_add(a, v); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
    return host_cuda::atomic_add(a, v);
}
inline float atomicAdd(float* a, float v) { return host_cuda::atomic_add(a, v); }
inline double atomicAdd(double* a, double v) { return host_cuda::atomic_add(a, v); }
inline int atomicSub(int* a, int v) { return host_cuda::atomic_add(a, -v); }
inline unsigned int atomicSub(unsigned int* a, unsigned int v) { return host_cuda::atomic_add(a, 0u - v); }
inline int atomicCAS(int* a, int c, int v) { return host_cuda::atomic_cas(a, c, v); }
inline unsigned int atomicCAS(unsigned int* a, unsigned int c, unsigned int v) {
    return host_cuda::atomic_cas(a, c, v);
}
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long c, unsigned long long v) {
    return host_cuda::atomic_cas(a, c, v);
}
inline int atomicExch(int* a, int v) { return host_cuda::atomic_exch(a, v); }
inline unsigned int atomicExch(unsigned int* a, unsigned int v) { return host_cuda::atomic_exch(a, v); }
inline unsigned long long atomicExch(unsigned long long* a, unsigned long long v) {
    return host_cuda::atomic_exch(a, v);
}
inline float atomicExch(float* a, float v) { return host_cuda::atomic_exch(a, v); }
inline int atomicMax(int* a, int v) { return host_cuda::atomic_max(a, v); }
inline unsigned int atomicMax(unsigned int* a, unsigned int v) { return host_cuda::atomic_max(a, v); }
inline long long atomicMax(long long* a, long long v) { return host_cuda::atomic_max(a, v); }
inline int atomicMin(int* a, int v) { return host_cuda::atomic_min(a, v); }
inline unsigned int atomicMin(unsigned int* a, unsigned int v) { return host_cuda::atomic_min(a, v); }
inline long long atomicMin(long long* a, long long v) { return host_cuda::atomic_min(a, v); }

// Reinterpretations.
inline float __int_as_float(int v) { return host_cuda::bit_cast<float>(v); }
inline int __float_as_int(float v) { return host_cuda::bit_cast<int>(v); }
inline float __uint_as_float(unsigned int v) { return host_cuda::bit_cast<float>(v); }
inline unsigned int __float_as_uint(float v) { return host_cuda::bit_cast<unsigned int>(v); }
inline double __longlong_as_double(long long v) { return host_cuda::bit_cast<double>(v); }
inline long long __double_as_longlong(double v) { return host_cuda::bit_cast<long long>(v); }

// Math: the C library's functions (math.h, with C++'s float overloads), and CUDA's extras.
using std::isfinite;
using std::isinf;
using std::isnan;
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
template <typename T> inline T __ldg(const T* p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
