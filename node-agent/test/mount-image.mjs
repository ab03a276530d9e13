// Serves one image over FUSE for the tests, in its own process so that the test process can touch
// the mountpoint freely (FUSE callbacks run on the serving process's JS thread).
//   node mount-image.mjs CONVERTED_DIR MOUNTPOINT [FAIL_PATH]
// Reads of FAIL_PATH fail (the mount must answer EIO). SKIFF_FUSE_ENGINE=dev-fuse serves it with
// skiff's own FUSE session over /dev/fuse instead of fuse-native. Prints "mounted" once the mount is up, and
// unmounts and exits on SIGTERM or SIGINT. Needs `npm run build`.
import { mountImage } from "../../dist/node-agent/src/fuse-fs.js";
import { mountDirect } from "../../dist/node-agent/src/fuse/mount-direct.js";
import { LocalReader } from "../../dist/node-agent/test/local-reader.js";

const [dir, mountpoint, failPath] = process.argv.slice(2);
if (!dir || !mountpoint) {
  process.stderr.write("usage: mount-image.mjs CONVERTED_DIR MOUNTPOINT [FAIL_PATH]\n");
  process.exit(2);
}

const local = await LocalReader.open(dir);
const failInode = failPath === undefined ? null : local.bootstrap.lookup(failPath);
const reader = {
  read: (inode, offset, length) => (inode === failInode ? Promise.reject(new Error(`inode ${inode} fails on purpose`)) : local.read(inode, offset, length)),
};
const mountWith = process.env.SKIFF_FUSE_ENGINE === "dev-fuse" ? mountDirect : mountImage;
const mount = await mountWith({ bootstrap: local.bootstrap, reader, mountpoint });
process.stdout.write("mounted\n");

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  try {
    await mount.unmount();
    process.exit(0);
  } catch (err) {
    process.stderr.write(`unmount failed: ${err.message}\n`);
    process.exit(1);
  }
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
