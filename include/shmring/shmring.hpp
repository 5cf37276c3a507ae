// Everything a CPU user of shmring needs.
#pragma once

#include "shmring/broadcast_ring.hpp"
#include "shmring/error.hpp"
#include "shmring/event.hpp"
#include "shmring/layout.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/process.hpp"
#include "shmring/segment.hpp"
#include "shmring/segment_passing.hpp"
#include "shmring/spsc_ring.hpp"
#include "shmring/status.hpp"
#include "shmring/typed_ring.hpp"
#include "shmring/wait.hpp"
