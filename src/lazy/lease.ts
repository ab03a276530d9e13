// The lease lives with the stores it is written to (../store/lease.ts), so the blob cache can take one too.
export { Lease, LeaseLost, type LeaseOptions } from "../store/lease.ts";
