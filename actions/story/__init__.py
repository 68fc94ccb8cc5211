"""The story-video pipeline's parts (docs/STORY.md): the seed's option lists, the story
writers, scene splitting, narration backends, subtitles and the MP4 assembly. The two
actions (``actions.story_video``, ``actions.story_image``) run them on a worker."""
