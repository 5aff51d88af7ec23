"""Reading what the published code writes: network pickles, without running anything in them
(`pickle_reader`), as our networks (`published`). How a published constructor's arguments
become a family's config is declared by each family (`creps.nets.<family>.from_published`)."""
