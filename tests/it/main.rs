mod directory;
