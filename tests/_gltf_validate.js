// Validate one .glb with the Khronos glTF validator (npm gltf-validator) and print its issue summary as JSON.
// Usage: VALIDATOR_DIR=<folder with node_modules/gltf-validator> node _gltf_validate.js FILE.glb
const path = require("path");
const fs = require("fs");
const validator = require(path.join(process.env.VALIDATOR_DIR, "node_modules", "gltf-validator"));
validator.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])))
  .then((r) => console.log(JSON.stringify({ numErrors: r.issues.numErrors, numWarnings: r.issues.numWarnings,
                                            messages: r.issues.messages })))
  .catch((e) => { console.error(String(e)); process.exit(1); });
