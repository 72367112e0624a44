"""Brain MRI grade classifier family (SPEC 5E): spec (no torch), phantom/demo, data, net, train, predict."""
